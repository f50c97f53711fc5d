"""Analyze a study's results table: loss thresholds with intervals, verdicts (emergent, smooth,
not-learned, insufficient-data), mirage checks, the scaling law L(N, D) and emergence forecasts.

Reads only ``results.csv`` (and optional per-example records); never imports torch. Imported
lazily: ``losslens.config`` imports :mod:`.config` and must not pay for scipy and matplotlib.
"""

from __future__ import annotations

from losslens.lazy import lazy_attributes

_LAZY = {
    "analyze": "losslens.analyze.analysis",
    "find_threshold": "losslens.analyze.threshold",
    "extrapolation_test": "losslens.analyze.threshold",
    "ThresholdResult": "losslens.analyze.threshold",
    "fit_scaling_law": "losslens.analyze.scaling",
    "ScalingFit": "losslens.analyze.scaling",
}

__all__ = list(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY)
