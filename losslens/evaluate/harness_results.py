"""lm-eval's output for one unit as the sweep's result JSON (part of :mod:`losslens.evaluate.harness`).

Metric names: lm-eval's ``"<metric>,<filter>"`` becomes :func:`losslens.metrics.metric_name`;
``ci_low``/``ci_high`` = value ± z·stderr where lm-eval reports a standard error; ``chance`` = mean of
1/(number of choices) for the accuracies of multiple-choice tasks; lm-eval's own ``higher_is_better`` is
kept, with one note where it disagrees with how losslens reads the metric.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Optional

from losslens import contracts
from losslens.metrics import metric_name, normal_interval

KIND = "lm-eval"  # the "kind" of a harness unit's JSON file


def unit_result(out: dict, task, version: str, confidence: float, per_example: bool, extra: tuple[dict, dict],
                noted: set, log: Callable[[str], None]) -> dict:
    """The unit's JSON: lm-eval's metrics (see the module docstring), and losslens' continuous ones (``extra``)."""
    raw = out["results"][task.name]
    samples = [(leaf, s) for leaf in task.leaves for s in out["samples"].get(leaf, [])]
    configs = {leaf: out["configs"].get(leaf) or {} for leaf in task.leaves}
    multiple_choice = all(c.get("output_type") == "multiple_choice" for c in configs.values())
    chance = _chance(samples) if multiple_choice else None
    their_better = out.get("higher_is_better", {}).get(task.name, {})
    metrics = {}
    for key, value in raw.items():
        metric, _, filt = key.partition(",")
        if not filt or metric.endswith("_stderr") or not _finite(value):
            continue  # "alias", "sample_len", stderr entries, "N/A"
        name = metric_name(metric, filt)
        stderr = raw.get(f"{metric}_stderr,{filt}")
        stderr = float(stderr) if _finite(stderr) else None
        info = contracts.metric_info(name)
        low, high = normal_interval(float(value), stderr, confidence) if stderr is not None else (None, None)
        metrics[name] = {
            "value": float(value), "ci_low": low, "ci_high": high,
            "n": int(raw.get("sample_count", {}).get(key) or raw.get("sample_len") or 0) or None,
            "chance": chance if metric.startswith("acc") else None,
            "stderr": stderr, "higher_is_better": their_better.get(metric),
            "discontinuous": info.discontinuous,
        }
        disagree = their_better.get(metric) is not None and their_better[metric] != info.higher_is_better
        if disagree and (task.name, name) not in noted:
            noted.add((task.name, name))
            log(f"lm-eval: note: {task.name}/{name}: lm-eval says higher is "
                     f"{'better' if their_better[metric] else 'worse'}; losslens analyze reads it the other way")
    continuous, per_doc = extra
    result = {
        "task": task.name, "kind": KIND, "n_examples": len({(leaf, s["doc_id"]) for leaf, s in samples}),
        "scorer": "losslens" if continuous else "lm_eval.simple_evaluate",
        "metrics": dict(sorted((metrics | continuous).items())),
        "lm_eval": {
            "version": version, "tasks": list(task.leaves),
            "n_shot": {leaf: out.get("n-shot", {}).get(leaf) for leaf in task.leaves},
            "results": raw, "configs": configs,
        },
    }
    if per_example:
        result["examples"] = [_record(leaf, s) | per_doc.get((leaf, s.get("doc_id")), {}) for leaf, s in samples]
    return result


def _chance(samples: list[tuple[str, dict]]) -> Optional[float]:
    """Mean of 1/k over the documents of multiple-choice (task, sample) pairs, k the number of choices."""
    inv = {}
    for leaf, s in samples:
        k = len(s.get("arguments") or [])
        if "acc_mutual_info" in s.get("metrics", []):
            k //= 2  # lm-eval adds an unconditional request per choice
        if k:
            inv[(leaf, s.get("doc_id"))] = 1.0 / k
    return sum(inv.values()) / len(inv) if inv else None


def _record(leaf: str, s: dict) -> dict:
    """A per-example record: the document's id, the answer, and each metric under its results.csv name."""
    rec: dict[str, Any] = {"task": leaf, "doc_id": s.get("doc_id"), "filter": s.get("filter"),
                           "target": s.get("target")}
    resps = s.get("filtered_resps") or []
    if resps and all(isinstance(r, (list, tuple)) and r and _finite(r[0]) for r in resps):
        rec["logliks"] = [float(r[0]) for r in resps]
    elif resps:
        rec["prediction"] = resps[0]
    for metric in s.get("metrics", []):
        rec[metric_name(metric, s.get("filter", "none"))] = s.get(metric)
    return rec


def _finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
