"""Train a whole study (or chosen runs of it): prepare the token shards once, then each run in turn."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from losslens import contracts
from losslens.config import StudyConfig
from losslens.fsio import atomic_write_text
from losslens.tracking import check_installed
from losslens.train.data import prepare_data
from losslens.train.kernels import use_liger
from losslens.train.loop import RunSummary, train_run
from losslens.train.plan import RunPlan, find_run, plan_runs
from losslens.train.runtime import make_accelerator


def prepare_study_dir(study: StudyConfig, accelerator=None) -> Path:
    """Write ``study.yaml`` and the token shards under the study's output folder (main process first)."""
    out = study.output_dir
    data_dir = out / contracts.DATA_DIR
    main = accelerator is None or accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        study_file, text = out / contracts.STUDY_FILE, study.to_yaml()
        if not study_file.is_file() or study_file.read_text() != text:
            atomic_write_text(study_file, text)
        prepare_data(study.data, study.corpus_seed, data_dir)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return data_dir


def train_study(study: StudyConfig, runs: Optional[Sequence[str]] = None) -> list[RunSummary]:
    """Train every run of ``study`` (or only ``runs``), resuming any that were interrupted."""
    accelerator = make_accelerator(study)
    use_liger(study.train.kernels, accelerator.device, source=f"{study.source}: train.kernels")  # fail before tokenizing
    check_installed(study.train.tracker_names(), study.source)
    data_dir = prepare_study_dir(study, accelerator)
    plans: list[RunPlan] = plan_runs(study)
    if runs:
        plans = [find_run(plans, name) for name in runs]
    summaries = []
    for plan in plans:
        summaries.append(train_run(study, plan, accelerator, data_dir))
        accelerator.free_memory()
    return summaries
