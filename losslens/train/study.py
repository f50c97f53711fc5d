"""Train a whole study (or chosen runs of it): check everything, prepare the token shards once, then
each run in turn.

Nothing is written until every check has passed: the runs asked for exist, the output folder holds no
study of another kind, the config changes nothing its checkpoints were trained with, and its token
shards are of this data config. A study whose runs are all trained says so and trains nothing.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Optional, Sequence

from losslens import contracts
from losslens.config import StudyConfig
from losslens.fsio import atomic_write_text
from losslens.outputs import refuse_overwriting_inputs
from losslens.study_dir import TRAINED, check_unchanged_since_training, require_kind, require_own_data_folder
from losslens.tracking import check_installed
from losslens.train.data import existing_data, prepare_data
from losslens.train.kernels import use_liger
from losslens.train.loop import RunSummary, train_run
from losslens.train.plan import RunPlan, find_run, plan_runs
from losslens.train.runtime import make_accelerator


def check_study(study: StudyConfig, runs: Optional[Sequence[str]] = None) -> list[RunPlan]:
    """The runs to train (all, or ``runs``), after every check that needs no model (see the module docstring)."""
    plans: list[RunPlan] = plan_runs(study)
    if runs:
        plans = [find_run(plans, name) for name in runs]
    out = study.output_dir
    refuse_overwriting_inputs([out / contracts.DATA_DIR, *(out / p.name for p in plans)], _inputs(study),
                              f"{study.source}: out_dir")
    if out.is_dir():
        require_kind(out, TRAINED, "training")
        require_own_data_folder(out)
        check_unchanged_since_training(study, out, strict=True)
        existing_data(study.data, study.corpus_seed, out / contracts.DATA_DIR)
    return plans


def _inputs(study: StudyConfig) -> list[Path]:
    """The files training reads besides its config: corpus files (globs expanded) and a tokenizer."""
    paths = [Path(m) for p in study.data.paths for m in (glob.glob(p) if any(c in p for c in "*?[") else [p])]
    return paths + ([Path(study.data.tokenizer.path)] if study.data.tokenizer.path else [])


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


def trained_summary(study: StudyConfig, plan: RunPlan) -> Optional[RunSummary]:
    """The summary of a run whose final checkpoint exists (trained with this config and seeds), else None."""
    final = study.output_dir / plan.name / contracts.checkpoint_dirname(plan.tokens_at(plan.total_steps))
    if not (final / contracts.META_FILE).is_file():
        return None
    meta = contracts.read_meta(final)
    if (meta.get("config_hash") != study.hash() or meta.get("step") != plan.total_steps
            or contracts.checkpoint_seeds(meta, final) != (plan.seed.init, plan.seed.data)):
        return None  # train_run says what is wrong with it
    return RunSummary(plan.name, plan.total_steps, plan.tokens_at(plan.total_steps), final, None, up_to_date=True)


def train_study(study: StudyConfig, runs: Optional[Sequence[str]] = None) -> list[RunSummary]:
    """Train every run of ``study`` (or only ``runs``), resuming any that were interrupted."""
    plans = check_study(study, runs)
    accelerator = make_accelerator(study)
    use_liger(study.train.kernels, accelerator.device, compiled=study.train.compile,
              source=f"{study.source}: train.kernels")  # fail before tokenizing
    check_installed(study.train.tracker_names(), study.source)
    data_dir = prepare_study_dir(study, accelerator)
    done = {p.name: trained_summary(study, p) for p in plans}
    if all(done.values()) and accelerator.is_main_process:
        print(f"train: all {len(plans)} runs up to date in {study.output_dir}", flush=True)
    summaries = []
    for plan in plans:
        summaries.append(done[plan.name] or train_run(study, plan, accelerator, data_dir))
        accelerator.free_memory()
    return summaries
