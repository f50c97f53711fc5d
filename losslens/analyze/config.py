"""The ``analyze:`` section of a study config, read by ``losslens run`` and ``losslens analyze RUN_DIR``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

from losslens.contracts import MAX_PARAMS, STUDY_FILE
from losslens.errors import ConfigError
from losslens.schema import PROBABILITY, Bootstrap, Range, SeedInt, check_fields


@dataclass
class AnalyzeConfig:
    # The x-axis: validation loss (nats/token), or validation bits per byte, which compares runs whose
    # tokenizers differ. Every threshold, scaling law, forecast and backtest is in this unit.
    x: Literal["loss", "bpb"] = "loss"


@dataclass
class AnalyzeOptions:
    """The settings of one analysis, each with its valid range: the flags of ``losslens analyze`` take their
    types from here (``losslens.argtypes.flag``) and :func:`losslens.analyze.analysis.run_analysis` checks
    its arguments against it (:meth:`check`)."""

    bootstrap: Bootstrap = 1000  # resamples of every interval; 0: none
    seed: SeedInt = 0
    ci_level: Annotated[float, PROBABILITY] = 0.95
    forecast_sizes: Optional[list[Annotated[float, Range(gt=0, le=MAX_PARAMS, what="a parameter count")]]] = None

    def check(self) -> None:
        """Raise ConfigError naming the flag (``--ci-level: ...``) of the first setting out of its range."""
        check_fields(self, label=lambda name: "--" + name.replace("_", "-"))


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
