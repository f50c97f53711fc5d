"""``losslens evaluate --order coarse-to-fine``: any prefix of the sweep spans every run's tokens evenly."""

from __future__ import annotations

import pytest
import torch

from losslens import contracts
from losslens.evaluate.order import bisection_order, coarse_to_fine
from losslens.evaluate.config import EvaluateOptions
from losslens.evaluate.sweep import evaluate_study
from tests.eval_fixtures import make_study, save_checkpoint

torch.set_num_threads(1)


@pytest.mark.parametrize("n", range(0, 40))
def test_bisection_order_visits_each_index_once_ends_first(n):
    order = bisection_order(n)
    assert sorted(order) == list(range(n))
    assert order[: min(n, 2)] == [0, n - 1][: min(n, 2)]


@pytest.mark.parametrize("k", [2, 3, 4])
def test_every_power_of_two_prefix_is_evenly_spaced(k):
    n = 2**k + 1
    order = bisection_order(n)
    for j in range(k + 1):
        prefix = sorted(order[: 2**j + 1])
        assert {b - a for a, b in zip(prefix, prefix[1:])} == {2 ** (k - j)}, (j, prefix)


def test_runs_take_turns_at_each_step(tmp_path):
    runs = [[tmp_path / f"r{r}" / f"c{i}" for i in range(n)] for r, n in enumerate((5, 3))]
    got = [(p.parent.name, p.name) for p in coarse_to_fine(runs)]
    assert got == [("r0", "c0"), ("r1", "c0"), ("r0", "c4"), ("r1", "c2"), ("r0", "c2"), ("r1", "c1"),
                   ("r0", "c1"), ("r0", "c3")]


def test_sweep_visits_checkpoints_coarse_to_fine(tmp_path):
    study = make_study(tmp_path, runs={"xs_64K": [1024], "s_64K": [1024]}, tasks=[])
    for run, seed in (("xs_64K", 0), ("s_64K", 1)):
        for tokens in (2048, 3072, 4096):
            save_checkpoint(study, run, tokens, seed=seed)
    lines: list[str] = []
    summary = evaluate_study(study, EvaluateOptions(order="coarse-to-fine", progress=False), log=lines.append)
    visited = [line.split()[1] for line in lines if line.startswith("evaluated ")]
    ends = {f"{run}/{contracts.checkpoint_dirname(t)}" for run in ("xs_64K", "s_64K") for t in (1024, 4096)}
    assert set(visited[:4]) == ends and len(visited) == summary.evaluated == 8
