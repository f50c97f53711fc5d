"""The ``analyze:`` section of a study config, read by ``losslens run`` and ``losslens analyze RUN_DIR``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from losslens.contracts import STUDY_FILE
from losslens.errors import ConfigError


@dataclass
class AnalyzeConfig:
    # The x-axis: validation loss (nats/token), or validation bits per byte, which compares runs whose
    # tokenizers differ. Every threshold, scaling law, forecast and backtest is in this unit.
    x: Literal["loss", "bpb"] = "loss"


def read_analyze_config(run_dir: str | Path) -> AnalyzeConfig:
    """The ``analyze`` section of ``RUN_DIR/study.yaml``; the defaults where there is no such file or section."""
    from losslens.config import build_dataclass, read_yaml_mapping  # losslens.config imports this module

    path = Path(run_dir) / STUDY_FILE
    if not path.is_file():
        return AnalyzeConfig()
    raw = read_yaml_mapping(path, "study config").get("analyze") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: analyze: expected a mapping, got {raw!r}")
    return build_dataclass(AnalyzeConfig, raw, "analyze", str(path))
