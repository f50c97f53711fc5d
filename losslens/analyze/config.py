"""Every option of the analyze stage in one record, :class:`AnalyzeConfig`: the ``analyze:`` section of a
study config (read by ``losslens run``, and by ``losslens analyze RUN_DIR`` from ``RUN_DIR/study.yaml``),
with the flags of ``losslens analyze`` as overrides of its fields."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from losslens.argtypes import flag_name
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


XAxis = Literal["loss", "bpb"]
X_AXES = typing.get_args(XAxis)
ScalingPoints = Literal["decayed", "all"]  # which checkpoints the scaling law is fitted to
SCALING_POINTS = typing.get_args(ScalingPoints)


@dataclass
class AnalyzeConfig:
    """Every option of one analysis, each with its valid range: the ``analyze:`` section of a study is the
    base, and the flags of ``losslens analyze`` (which take their types from here: ``losslens.argtypes.flag``)
    override its fields (:func:`with_overrides`). :meth:`check` refuses a record made in Python."""

    # The x-axis: validation loss (nats/token), or validation bits per byte, which compares runs whose
    # tokenizers differ. Every threshold, scaling law, forecast and backtest is in this unit.
    x: XAxis = "loss"
    bootstrap: Bootstrap = 1000  # resamples of every interval; 0: none
    seed: SeedInt = 0  # of every bootstrap
    ci_level: Annotated[float, PROBABILITY] = 0.95  # level of every interval
    # The scaling law is fitted to each run's final, fully decayed checkpoint, or to all of them.
    scaling_points: ScalingPoints = "decayed"
    # Runs held out and predicted: none, largest-size[:K], largest-budget or RUN[,RUN] (checked against the
    # table: losslens.analyze.backtest.choose_holdout); None: largest-size where there are 3 or more sizes.
    backtest: Optional[str] = None
    # Untrained non-embedding sizes to forecast; None: 10x and 100x the largest trained one.
    forecast_sizes: Optional[list[Annotated[float, Range(gt=0, le=MAX_PARAMS, what="a parameter count")]]] = None
    plots: bool = True  # draw the figures under plots/
    forecast: ForecastConfig = field(default_factory=ForecastConfig)

    def check(self) -> None:
        """Raise ConfigError naming the flag (``--ci-level: ...``) of the first setting out of its range."""
        for name, allowed in (("x", X_AXES), ("scaling_points", SCALING_POINTS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{flag_name(name)}: expected one of {', '.join(allowed)}, "
                                  f"got {getattr(self, name)!r}")
        check_fields(self, label=flag_name)
        problem = forecast_problem(self.forecast)
        if problem:
            where = "--intermediate" if problem[0] == "intermediate" else f"analyze.forecast.{problem[0]}"
            raise ConfigError(f"{where}: {problem[1]}")


def with_overrides(config: AnalyzeConfig, overrides: dict[str, Any]) -> AnalyzeConfig:
    """``config`` with fields replaced, e.g. ``{"bootstrap": 50, "forecast.intermediate": "loss"}`` (a dotted
    name reaches into ``forecast``); a value of None leaves its field as it is. The result is checked
    (:meth:`AnalyzeConfig.check`)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    known = [f.name for f in dataclasses.fields(AnalyzeConfig)] + [
        f"forecast.{f.name}" for f in dataclasses.fields(ForecastConfig)]
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
            raise ConfigError(f"analyze option {key!r}: unknown" + (f" (did you mean {close[0]!r}?)" if close else ""))
    forecast = {k.split(".", 1)[1]: v for k, v in given.items() if k.startswith("forecast.")}
    top = {k: v for k, v in given.items() if not k.startswith("forecast.")}
    config = dataclasses.replace(config, **top, forecast=dataclasses.replace(config.forecast, **forecast))
    config.check()
    return config


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


def analyze_config(run_dir: str | Path | None, overrides: dict[str, Any] | None = None) -> AnalyzeConfig:
    """The options of an analysis: the ``analyze`` section of ``RUN_DIR/study.yaml`` (the defaults without a
    study folder or section), with ``overrides`` over it (:func:`with_overrides`)."""
    base = read_analyze_config(run_dir) if run_dir is not None else AnalyzeConfig()
    return with_overrides(base, overrides or {})
