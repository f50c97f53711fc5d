"""Analyze a study's results table: loss thresholds with intervals, verdicts (emergent, smooth,
not-learned, insufficient-data), mirage checks, the scaling law L(N, D) and emergence forecasts.

Reads only ``results.csv`` (and optional per-example records); never imports torch.
"""

from losslens.analyze.scaling import ScalingFit, fit_scaling_law
from losslens.analyze.threshold import ThresholdResult, extrapolation_test, find_threshold


def analyze(run_dir=None, **kwargs):
    """Analyze ``RUN_DIR/results.csv`` and write report.json, report.md and plots/ (see analysis.analyze)."""
    from losslens.analyze.analysis import analyze as _analyze  # matplotlib and tqdm only when needed

    return _analyze(run_dir, **kwargs)


__all__ = ["analyze", "find_threshold", "fit_scaling_law", "ThresholdResult", "ScalingFit", "extrapolation_test"]
