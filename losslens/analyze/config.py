"""The ``analyze:`` section of a study config, read by ``losslens run`` and ``losslens analyze RUN_DIR``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Optional

from losslens.contracts import MAX_PARAMS, STUDY_FILE
from losslens.errors import ConfigError
from losslens.records import build_dataclass, read_yaml_mapping
from losslens.schema import PROBABILITY, Bootstrap, Range, SeedInt, check_fields


# Ways to forecast a task metric at a new (N, D) besides an intermediate metric of the task itself.
AUTO, LOSS_WAY, DIRECT_WAY = "auto", "loss", "direct"


@dataclass
class ForecastConfig:
    """``analyze.forecast``: how task metrics are forecast (losslens.analyze.forecast) and denoised."""

    # auto: per task, the way with the smallest error in an inner backtest on the training runs; loss:
    # (N, D) -> pretraining loss -> metric; direct: metric against compute; any other name: a metric of
    # the same task as the intermediate, e.g. bpb or loglik_byte ((N, D) -> task loss -> metric).
    intermediate: str = AUTO
    skip_fraction: float = 0.1  # in [0, 1): curves skip each run's checkpoints before this share of its tokens
    smooth_window: int = 5  # odd, >= 1: centred moving average over this many checkpoints (1: none)
    noise_window: int = 5  # >= 3: the noise floor is the scatter of each run's last this many checkpoints


def forecast_problem(f: ForecastConfig) -> Optional[tuple[str, str]]:
    """(field, why) for the first unusable setting of ``analyze.forecast``, or None."""
    if not f.intermediate.strip():
        return "intermediate", f"expected {AUTO}, {LOSS_WAY}, {DIRECT_WAY} or a metric name, got {f.intermediate!r}"
    if not 0 <= f.skip_fraction < 1:
        return "skip_fraction", f"must be in [0, 1), got {f.skip_fraction:g}"
    if f.smooth_window < 1 or f.smooth_window % 2 == 0:
        return "smooth_window", f"must be an odd number of checkpoints >= 1, got {f.smooth_window}"
    if f.noise_window < 3:
        return "noise_window", f"must be at least 3 checkpoints (a line through them leaves 1 degree of freedom), " \
                               f"got {f.noise_window}"
    return None


@dataclass
class AnalyzeConfig:
    # The x-axis: validation loss (nats/token), or validation bits per byte, which compares runs whose
    # tokenizers differ. Every threshold, scaling law, forecast and backtest is in this unit.
    x: Literal["loss", "bpb"] = "loss"
    forecast: ForecastConfig = field(default_factory=ForecastConfig)


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
    path = Path(run_dir) / STUDY_FILE
    if not path.is_file():
        return AnalyzeConfig()
    raw = read_yaml_mapping(path, "study config").get("analyze") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: analyze: expected a mapping, got {raw!r}")
    config = build_dataclass(AnalyzeConfig, raw, "analyze", str(path))
    problem = forecast_problem(config.forecast)
    if problem:
        raise ConfigError(f"{path}: analyze.forecast.{problem[0]}: {problem[1]}")
    return config
