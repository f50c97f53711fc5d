"""Training stage: pretrain a grid of model sizes x data budgets on one deterministic token stream."""

from losslens.train.study import prepare_study_dir, train_study

__all__ = ["train_study", "prepare_study_dir"]
