"""The per-(task, metric) work of analyze: threshold, verdict and alignment, pair by pair in parallel.

Pairs are independent, and on a real sweep they are most of analyze's time (the bootstrap of every
emergent pair), so they run in worker processes when there is enough work to pay for starting them
(:data:`PARALLEL_MIN_WORK`; see :mod:`losslens.analyze.parallel`). Each pair keeps its own seed,
so the results do not depend on the number of workers.
"""

from __future__ import annotations


import numpy as np
from tqdm import tqdm

from losslens.analyze.alignment import alignment_r2
from losslens.analyze.parallel import fork_map, max_workers
from losslens.analyze.startup import startup_eta
from losslens.analyze.study_folder import load_examples
from losslens.analyze.table import Series
from losslens.analyze.threshold import EMERGENT, ThresholdResult, find_threshold

# points x bootstrap resamples, summed over pairs, below which a worker pool costs more than it saves
PARALLEL_MIN_WORK = 2_000_000


def analyze_pair(series: Series, run_dir, n_bootstrap: int, seed: int, ci_level: float = 0.95,
                 min_side: int = 3) -> tuple[ThresholdResult, dict, dict | None]:
    """Threshold and verdict of one task x metric, how well loss and compute align its sizes, and
    (where some size has several seeds) η seed by seed. Per-example records, if ``run_dir`` has them,
    are read here: one pair's at a time in memory."""
    examples = load_examples(run_dir, series)
    opts = dict(higher_is_better=series.higher_is_better, n_bootstrap=n_bootstrap, seed=seed, ci_level=ci_level,
                min_side=min_side)
    res = find_threshold(series.x, series.value, series.chance, examples=examples, sizes=series.n_params,
                         seeds=series.seed, **opts)
    res = startup_eta(res, series.run, series.tokens, series.x, series.value)
    align = {"loss": alignment_r2(series.x, series.value, series.n_params),
             "compute": alignment_r2(np.log10(np.maximum(series.flops, 1.0)), series.value, series.n_params)}
    seeds = seed_summary(series, res, examples, opts) if res.used_seeds else None
    return res, align, seeds


def seed_summary(series: Series, pooled: ThresholdResult, examples: list | None, opts: dict) -> dict:
    """η of each seed alone (its runs of every size), their spread, and how much of the pooled interval's
    width the seed level makes: share_from_seeds = 1 - width without the seed level / width with it."""
    per_seed = []
    for label in sorted(set(series.seed.tolist())):
        mine = series.seed == label
        sub = None if examples is None else [e for e, keep in zip(examples, mine) if keep]
        th = find_threshold(series.x[mine], series.value[mine], series.chance, examples=sub, **opts)
        th = startup_eta(th, series.run[mine], series.tokens[mine], series.x[mine], series.value[mine])
        found = th.verdict == EMERGENT
        per_seed.append({"seed": label, "verdict": th.verdict, "n_points": th.n_points,
                         "eta": th.eta if found else None, "ci": [th.ci_low, th.ci_high] if found else None})
    etas = np.array([r["eta"] for r in per_seed if r["eta"] is not None])
    widths = [r["ci"][1] - r["ci"][0] for r in per_seed if r["ci"] is not None]
    spread = {"n": len(etas), "sd": float(etas.std(ddof=1)) if len(etas) > 1 else None,
              "min": float(etas.min()) if len(etas) else None, "max": float(etas.max()) if len(etas) else None,
              "range": float(np.ptp(etas)) if len(etas) > 1 else None,
              "within_seed_width_mean": float(np.mean(widths)) if widths else None}
    with_, without = pooled.ci_high - pooled.ci_low, None
    if pooled.ci_without_seeds is not None:
        without = pooled.ci_without_seeds[1] - pooled.ci_without_seeds[0]
    share = 1 - without / with_ if without is not None and with_ > 0 else None
    return {"per_seed": per_seed, "spread": spread,
            "interval": {"with_seeds": [pooled.ci_low, pooled.ci_high], "width_with": with_,
                         "without_seeds": list(pooled.ci_without_seeds or [None, None]), "width_without": without,
                         "share_from_seeds": share}}


def _job(args):
    return analyze_pair(*args)


def analyze_pairs(jobs: list[tuple], progress: bool | None) -> list[tuple]:
    """:func:`analyze_pair` on every ``(series, run_dir, n_bootstrap, seed, ci_level, min_side)``, results in
    job order."""
    work = sum(len(s) * max(n_boot, 1) for s, _, n_boot, *_ in jobs)
    workers = max_workers() if work >= PARALLEL_MIN_WORK else 1
    # disable=None: a bar only on a terminal.
    return list(tqdm(fork_map(_job, jobs, workers), total=len(jobs), desc="thresholds", leave=False,
                     disable=None if progress is None else not progress))
