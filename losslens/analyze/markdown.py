"""Cells of report.md's tables, shared by :mod:`losslens.analyze.report` and :mod:`losslens.analyze.forecast_report`."""

from __future__ import annotations

import math

MISSING = "–"  # a cell with no number (none computed, or not finite)


def number_cell(v, fmt: str = ".3f") -> str:
    """``v`` formatted, or a dash for None and non-finite floats."""
    return MISSING if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)
