"""Evaluation results to the study's experiment trackers (``train.trackers``): each (checkpoint, task,
metric) value with its interval, logged into the tracker run of the checkpoint's losslens run (the one
training made, found again by name) against the checkpoint's training tokens. The sweep calls this
after each checkpoint, so an adaptive sweep shows up as it goes."""

from __future__ import annotations

import json
import math
from pathlib import Path

from losslens import contracts
from losslens.config import StudyConfig
from losslens.tracking import TrackerRun, Where, check_installed


def result_values(result: dict) -> dict[str, float]:
    """``eval/<task>/<metric>`` and its interval, ``.../ci_low`` and ``.../ci_high``, from a result file."""
    values = {}
    for metric, agg in result["metrics"].items():
        key = f"eval/{result['task']}/{metric}"
        for name, v in ((key, agg.get("value")), (f"{key}/ci_low", agg.get("ci_low")),
                        (f"{key}/ci_high", agg.get("ci_high"))):
            if isinstance(v, (int, float)) and math.isfinite(v):
                values[name] = v
    return values


class EvalTracking:
    """Logs the result files a sweep writes; a no-op when the study names no tracker."""

    def __init__(self, study: StudyConfig, study_dir: Path):
        self.names, self.study_dir, self.study = study.train.tracker_names(), study_dir, study.name
        check_installed(self.names, str(study_dir / contracts.STUDY_FILE))

    def log(self, result_files: list[Path]) -> None:
        if not self.names or not result_files:
            return
        by_run: dict[str, list[dict]] = {}
        for path in result_files:
            result = json.loads(path.read_text())
            by_run.setdefault(result["checkpoint"]["run"], []).append(result)
        for run, results in by_run.items():
            with TrackerRun.open(self.names, Where(self.study_dir, self.study, run)) as trackers:
                for r in sorted(results, key=lambda r: r["checkpoint"]["tokens"]):
                    trackers.log(result_values(r), r["checkpoint"]["tokens"])
