"""The threshold judge an adaptive sweep is given: analyze's threshold on the points so far.

It sits above both stages (beside :mod:`losslens.pipeline`): the faces that start an adaptive sweep pass
:func:`provisional_eta` to :func:`losslens.evaluate.sweep.evaluate_study`, so evaluation never imports
analysis (docs/architecture.md).
"""

from __future__ import annotations

import math
from typing import Optional

from losslens.evaluate.adaptive import Eta, Point


def provisional_eta(runs: dict[str, list[Point]], chance: Optional[float], higher_is_better: bool,
                    n_bootstrap: int = 1000, seed: int = 0) -> Optional[Eta]:
    """analyze's threshold on the points so far (all runs pooled), or None when the shape is not emergent."""
    from losslens.analyze.threshold import EMERGENT, find_threshold  # scipy: only when a sweep is adaptive

    points = [p for ps in runs.values() for p in ps]
    res = find_threshold([p.loss for p in points], [p.value for p in points], chance,
                         higher_is_better=higher_is_better, n_bootstrap=n_bootstrap, seed=seed)
    if not math.isfinite(res.eta):
        return None
    lo, hi = (res.ci_low, res.ci_high) if math.isfinite(res.ci_low) and math.isfinite(res.ci_high) else (res.eta,) * 2
    return Eta(res.eta, lo, hi, res.verdict, emergent=res.verdict == EMERGENT)
