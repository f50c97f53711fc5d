"""Seeds as the outer level of analyze's bootstraps.

Runs of one size that differ only by their seed are replicates: their spread is run-to-run
variance, which a bootstrap over checkpoints alone treats as fixed. With a seed level, each
resample first draws, within each size, as many seeds as that size has, with replacement; then
as many checkpoints as the drawn seeds hold, with replacement, from their points (a seed drawn
twice puts its points in the pool twice). A seed is every run of its size with that label (its
budgets, WSD branches included). A size with one seed is kept as it is, so a table where every size
has one seed has no seed level: :meth:`SeedLevel.of` returns None and callers use their flat
bootstrap over points, with the same random draws as before seeds existed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SeedLevel:
    """Which (size, seed) group each point belongs to, and the groups of each size with several seeds."""

    group: np.ndarray  # per point: the index of its (size, seed) group
    n_groups: int
    replicated: tuple[np.ndarray, ...]  # per size with >= 2 seeds: the indices of its groups

    @classmethod
    def of(cls, sizes, seeds) -> SeedLevel | None:
        """The seed level of points with these sizes and seed labels; None when no size has two seeds."""
        if seeds is None or sizes is None or not len(seeds):
            return None
        size_idx = np.unique(np.asarray(sizes), return_inverse=True)[1].ravel()
        seed_idx = np.unique(np.asarray(seeds, dtype=str), return_inverse=True)[1].ravel()
        base = int(seed_idx.max()) + 1
        codes, group = np.unique(size_idx * base + seed_idx, return_inverse=True)
        size_of_group = codes // base
        replicated = tuple(g for g in (np.flatnonzero(size_of_group == s) for s in np.unique(size_of_group))
                           if len(g) > 1)
        return cls(group.ravel(), len(codes), replicated) if replicated else None

    @property
    def seeds_per_size(self) -> list[int]:
        """How many seeds each size with several has."""
        return [len(g) for g in self.replicated]

    def counts(self, rng: np.random.Generator, n_boot: int) -> np.ndarray:
        """How often each point is drawn in each of ``n_boot`` resamples (n x n_boot, float):
        seeds within sizes, then points from the drawn seeds (see the module docstring)."""
        times = np.ones((n_boot, self.n_groups))
        for groups in self.replicated:
            k = len(groups)
            picks = rng.integers(0, k, (n_boot, k))
            times[:, groups] = (picks[:, :, None] == np.arange(k)).sum(axis=1)
        pool = times[:, self.group]  # each point, as often as its seed was drawn
        total = pool.sum(axis=1)
        return rng.multinomial(total.astype(np.int64), pool / total[:, None]).T.astype(float)

    def picks(self, rng: np.random.Generator) -> np.ndarray:
        """One resample as point indices (each as often as it is drawn), for bootstraps that refit per resample."""
        return np.repeat(np.arange(len(self.group)), self.counts(rng, 1)[:, 0].astype(np.int64))
