"""The evaluate stage: pretraining loss and downstream tasks for every checkpoint of a study.

``evaluate_study(RUN_DIR)`` (``losslens evaluate RUN_DIR``) fills ``RUN_DIR/results.csv``. The
pieces: :mod:`.tasks` (task files, few-shot, registry), :mod:`.requests` (what tasks ask of a
model), :mod:`.scoring` and :mod:`.generation` (batched answers), :mod:`losslens.metrics` (pure
functions and the metric registry), :mod:`.runner` (one checkpoint x one task), :mod:`.units`
(pretraining loss, tasks and harness tasks behind one interface), :mod:`.harness`
(lm-evaluation-harness tasks), :mod:`.sweep` (all of them, incremental and sharded), :mod:`.adaptive`
(a sweep that evaluates tasks only where their metric moves and around the threshold).

Imported lazily: ``losslens.config`` imports :mod:`.config` and must not pay for torch.
"""

from __future__ import annotations

from losslens.lazy import lazy_attributes

_LAZY = {
    "evaluate_study": "losslens.evaluate.sweep",
    "write_results_table": "losslens.evaluate.sweep",
    "load_task": "losslens.evaluate.tasks",
    "resolve_task": "losslens.evaluate.tasks",
    "Scorer": "losslens.evaluate.scoring",
    "evaluate_task": "losslens.evaluate.runner",
}

__all__ = list(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY)
