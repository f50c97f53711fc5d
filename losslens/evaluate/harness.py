"""Cross-checking with lm-evaluation-harness: the same local multiple-choice task as an lm-eval task YAML.

``harness_task_yaml(jsonl, folder, name)`` writes ``folder/<name>.yaml`` that reads the JSONL with
the ``json`` dataset builder (no download) and scores ``context + choice`` with no delimiter added,
the way losslens does (choices carry their own leading space). Load it with
``lm_eval.tasks.TaskManager(include_path=folder)``. Zero-shot only: lm-eval draws few-shot examples
with its own sampler, so few-shot prompts would differ from losslens'.
"""

from __future__ import annotations

from pathlib import Path

import yaml


def harness_task_yaml(jsonl: str | Path, folder: str | Path, name: str) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(Path(jsonl).resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "context",  # field names: the raw strings, no template whitespace
        "doc_to_choice": "choices",
        "doc_to_target": "answer",
        "target_delimiter": "",  # lm-eval's default is " "; losslens adds no separator
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
