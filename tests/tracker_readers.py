"""Reading what losslens logged back through each tracker's own reader, for the tracking tests.

TensorBoard: its event accumulator. MLflow: its client on the study's SQLite store. W&B (offline):
its protobuf records in the run's ``.wandb`` file (W&B ships no Python reader for offline runs; the
file is a LevelDB-style log of ``wandb_internal_pb2.Record`` messages).
"""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import pytest


def need(*packages: str):
    """Skip (with the reason) where a tracker's package is missing; CI installs them (scripts/setup.sh)."""
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} (pip install 'losslens[...]')")


def tensorboard_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} from every event file of a run's folder (not its hparams sub-runs)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def tensorboard_tags(logdir: Path) -> dict[str, list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    return acc.Tags()


def mlflow_client(study_dir: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{(study_dir / 'mlflow.db').resolve()}")


def mlflow_runs(study_dir: Path, experiment: str) -> dict[str, object]:
    """{run name: mlflow Run} of one experiment."""
    client = mlflow_client(study_dir)
    exp = client.get_experiment_by_name(experiment)
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


def mlflow_history(study_dir: Path, run, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in mlflow_client(study_dir).get_metric_history(run.info.run_id, key))


def wandb_history(run_file: Path) -> list[dict]:
    """The history rows of an offline W&B run file, each {key: value} (values decoded from JSON)."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B", f"{run_file}: not a W&B run file"
    rows, pos, block = [], 7, 32768
    payload = b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        payload += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last fragment of one
            record = wandb_internal_pb2.Record.FromString(payload)
            payload = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
        if kind == 0 and length == 0:
            break
    return rows
