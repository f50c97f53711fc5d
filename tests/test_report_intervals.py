"""No estimate outside its own interval, anywhere in report.json: a walk over every (value, interval)
field of reports on a synthetic study (thresholds, seeds, scaling law, forecasts, backtest) and on the
published Pythia evaluations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from losslens.analyze.analysis import analyze
from losslens.analyze.config import AnalyzeConfig
from losslens.import_results import import_results
from tests.conftest import write_results_csv
from tests.test_import_results import PYTHIA, PYTHIA_MAPPING, needs_pythia

LAW = dict(E=1.8, A=80.0, B=120.0, alpha=0.3, beta=0.3)
ETA, CHANCE = 4.5, 0.25

# interval key -> the key of its estimate in the same object (first present wins)
PAIRED = {"ci": ("predicted", "eta"), "eta_ci": ("eta",), "tokens_ci": ("tokens", "predicted_tokens"),
          "flops_ci": ("flops",), "ci_without_seeds": ("loss",)}
PARAMETER_INTERVALS = ("intervals", "profile_intervals")  # {param: [lo, hi]} beside "optimum"


def number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def intervals_of(report) -> list[tuple[str, float, float, float]]:
    """Every (path, estimate, lo, hi) in a report; fails on an interval-like field no rule pairs."""
    found = []

    def check(path, value, lo, hi):
        if all(map(number, (value, lo, hi))) or (number(value) and number(lo) and hi == math.inf):
            found.append((path, value, lo, hi))

    def walk(o, path):
        if isinstance(o, list):
            for i, v in enumerate(o):
                walk(v, f"{path}[{i}]")
            return
        if not isinstance(o, dict):
            return
        for key, v in o.items():
            here = f"{path}.{key}"
            if key in PAIRED and isinstance(v, list) and len(v) == 2:
                est = next((o[k] for k in PAIRED[key] if k in o), None)
                assert est is not None or None in v, f"{here}: an interval with no estimate beside it"
                check(here, est, *v)
            elif key == "ci_low":
                check(here, o["loss"], o["ci_low"], o["ci_high"])
            elif key in PARAMETER_INTERVALS:
                for p, (lo, hi) in v.items():
                    check(f"{here}.{p}", o["optimum"][p], lo, hi)
                    if key == "profile_intervals" and lo == hi:  # zero width only when marked
                        assert p in o.get("profile_notes", {}), f"{here}.{p}: [{lo}, {hi}] has zero width, unmarked"
            elif ("ci" in key.split("_") or "interval" in key) and isinstance(v, list) and len(v) == 2 \
                    and all(x is None or number(x) for x in v):
                pytest.fail(f"{here}: an interval no rule of this test pairs with its estimate")
            else:
                walk(v, here)

    walk(report, "")
    return found


def study_rows(rng) -> list[dict]:
    """4 sizes x 3 budgets x 5 checkpoints on LAW; accuracy at chance above loss ETA, rising below;
    a continuous metric rising steadily; the loss measured with 1 % noise."""
    rows = []
    for N in (1e5, 3e5, 1e6, 3e6):
        for budget in (2e6, 8e6, 3.2e7):
            for tokens in np.geomspace(budget / 16, budget, 5).astype(int):
                true = LAW["E"] + LAW["A"] / N ** LAW["alpha"] + LAW["B"] / tokens ** LAW["beta"]
                loss = true * (1 + 0.01 * rng.normal())
                common = {"run": f"n{int(N)}_d{int(budget)}", "n_params": int(N) + 1000,
                          "n_params_nonembed": int(N), "tokens": int(tokens), "step": int(tokens // 1000),
                          "flops": 6 * N * tokens, "loss": loss, "task": "t", "ci_low": "", "ci_high": "", "n": 500}
                acc = CHANCE + 0.2 * max(0.0, ETA - true) + 0.01 * rng.normal()
                prob = 0.25 + 0.5 / (1 + math.exp(true - 4.0)) + 0.01 * rng.normal()
                rows.append({**common, "metric": "acc", "value": min(max(acc, 0.0), 1.0), "chance": CHANCE})
                rows.append({**common, "metric": "prob_correct", "value": min(max(prob, 0.0), 1.0), "chance": CHANCE})
    return rows


def assert_every_estimate_inside(report: dict, expect: set[str]):
    found = intervals_of(report)
    outside = [f"{p}: {v} not in [{lo}, {hi}]" for p, v, lo, hi in found if not lo <= v <= hi]
    assert not outside, "\n".join(outside)
    kinds = {p.split(".")[-1].split("[")[0] for p, *_ in found}
    assert expect <= kinds, f"fields never checked: {expect - kinds}"  # the walk is not vacuous
    return found


def test_synthetic_study_report_holds_every_estimate_in_its_interval(tmp_path):
    path = write_results_csv(tmp_path / "results.csv", study_rows(np.random.default_rng(0)))
    analyze(config=AnalyzeConfig(bootstrap=40, plots=False), results=path, progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    found = assert_every_estimate_inside(report, {"ci_low", "eta_ci", "tokens_ci", "flops_ci", "ci", "alpha"})
    assert len(found) > 40
    assert any(p.startswith(".backtest.metrics") for p, *_ in found)


@needs_pythia
def test_pythia_report_holds_every_estimate_in_its_interval(tmp_path):
    results = tmp_path / "results.csv"
    import_results(PYTHIA_MAPPING, results, root=PYTHIA)
    analyze(config=AnalyzeConfig(bootstrap=20, plots=False), results=results, progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert_every_estimate_inside(report, {"ci_low", "ci"})


@pytest.mark.slow
def test_held_out_size_coverage_of_synthetic_backtests():
    # bench/interval_coverage.py --backtest: studies on a known law with planted metrics, the largest size
    # held out; the two-stage 95 % intervals must hold >= 90 % of the held-out measurements.
    import re
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = subprocess.run([sys.executable, str(ROOT / "bench" / "interval_coverage.py"), "--backtest", "6",
                          "--seeds-per-size", "2", "--rng", "5"], capture_output=True, text=True, check=True).stdout
    inside, total = map(int, re.search(r"two_stage (\d+)/(\d+) inside", out).groups())
    assert total == 6 * 3 * 2 * 2 and inside >= 0.9 * total, out
