"""Training stage: pretrain a grid of model sizes x data budgets on one deterministic token stream.

The API is imported lazily: ``losslens.config`` imports this package's torch-free ``config`` module,
and that must not pull in torch.
"""

from __future__ import annotations

__all__ = ["train_study", "prepare_study_dir", "plan_runs"]


def __getattr__(name: str):
    if name in ("train_study", "prepare_study_dir"):
        from losslens.train import study

        return getattr(study, name)
    if name == "plan_runs":
        from losslens.train.plan import plan_runs

        return plan_runs
    raise AttributeError(name)
