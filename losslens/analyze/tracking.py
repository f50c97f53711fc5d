"""The analysis to the study's experiment trackers (``train.trackers`` of ``RUN_DIR/study.yaml``): one
study-level tracker run, ``ANALYSIS_RUN``, with the verdict table, each threshold η with its interval,
the backtest tables and the plots. Read from ``report.json`` as written, so a tracker shows what the
report says. Logged against the most training tokens of any run, so a study that grows shows how its
thresholds move."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from losslens.contracts import STUDY_FILE
from losslens.tracking import ANALYSIS_RUN, TrackerRun, Where, check_installed

VERDICT_COLUMNS = ["task", "metric", "kind", "verdict", "eta", "eta_ci_low", "eta_ci_high", "preferred_model",
                   "delta_bic"]
BACKTEST_COLUMNS = ["task", "metric", "run", "actual", *(f"{way}_{c}" for way in ("two_stage", "direct")
                                                         for c in ("predicted", "ci_low", "ci_high", "inside")),
                    "closer"]


def analysis_trackers(run_dir: Optional[Path]) -> Optional[tuple[list[str], Where]]:
    """The trackers ``RUN_DIR/study.yaml`` names and where the analysis goes in them; None where there is
    no study.yaml or it names none. Stops (exit 2) when one is not installed."""
    from losslens.records import build_dataclass, read_yaml_mapping
    from losslens.train.config import TrainConfig

    study_file = None if run_dir is None else Path(run_dir) / STUDY_FILE
    if study_file is None or not study_file.is_file():
        return None
    raw = read_yaml_mapping(study_file, "study config")
    names = build_dataclass(TrainConfig, raw.get("train") or {}, "train", str(study_file)).tracker_names()
    if not names:
        return None
    check_installed(names, str(study_file))
    return names, Where(Path(run_dir), str(raw.get("name", "")), ANALYSIS_RUN)


def log_analysis(report: dict, out: Path, target: Optional[tuple[list[str], Where]]) -> None:
    """Log ``report`` (its plots under ``out``) to ``target``, what :func:`analysis_trackers` returned."""
    if target is None:
        return
    names, where = target
    tokens = int(max(report["study"]["budgets"]))
    with TrackerRun.open(names, where, {"results": report["study"]["results"], **_settings(report)}) as trackers:
        trackers.log(threshold_values(report), tokens)
        trackers.log_table("verdicts", VERDICT_COLUMNS, verdict_rows(report), tokens)
        if "skipped" not in report["backtest"]:
            trackers.log_table("backtest", BACKTEST_COLUMNS, backtest_rows(report["backtest"]), tokens)
        for name, paths in report["plots"].items():
            for png in (p for p in paths if p.endswith(".png")):
                trackers.log_image(f"plots/{name}", out / png, tokens)


def _settings(report: dict) -> dict:
    return {k: v for k, v in report["settings"].items() if isinstance(v, (int, float, str)) and k != "results"}


def threshold_values(report: dict) -> dict[str, float]:
    """``threshold/<task>/<metric>``: η, and its interval's ends, where the verdict has one."""
    values = {}
    for m in report["metrics"]:
        th, key = m["threshold"], f"threshold/{m['task']}/{m['metric']}"
        for name, v in ((key, th["loss"]), (f"{key}/ci_low", th["ci_low"]), (f"{key}/ci_high", th["ci_high"])):
            if v is not None:
                values[name] = v
    return values


def verdict_rows(report: dict) -> list[list]:
    return [[m["task"], m["metric"], m["kind"], m["verdict"], m["threshold"]["loss"], m["threshold"]["ci_low"],
             m["threshold"]["ci_high"], m["preferred_model"], m["delta_bic"]] for m in report["metrics"]]


def backtest_rows(backtest: dict) -> list[list]:
    rows = []
    for r in backtest["metrics"]:
        cells = []
        for way in ("two_stage", "direct"):
            w = r[way]
            ci = w.get("ci") or [None, None]
            cells += [w.get("predicted"), ci[0], ci[1], w.get("inside")]
        rows.append([r["task"], r["metric"], r["run"], r["actual"], *cells, r.get("closer")])
    return rows
