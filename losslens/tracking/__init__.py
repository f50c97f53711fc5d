"""Experiment trackers (TensorBoard, MLflow, W&B, Trackio, and the rest of accelerate's) for the three
stages, with training tokens as the x-axis. Importing this package costs nothing: each tracker's
package (and accelerate, torch) is imported when a run opens.

One tracker run per losslens run, named by the run and grouped by the study; evaluation logs into
that same run (found again by name) and analysis into a study-level run, ``ANALYSIS_RUN``.
"""

from __future__ import annotations

from losslens.tracking.kinds import PACKAGES, TOKENS, Where
from losslens.tracking.run import TrackerRun, check_installed

TRACKERS = tuple(PACKAGES)  # the names train.trackers accepts
ANALYSIS_RUN = "analysis"

__all__ = ["ANALYSIS_RUN", "TOKENS", "TRACKERS", "TrackerRun", "Where", "check_installed"]
