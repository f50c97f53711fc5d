"""What an existing study folder holds, checked before a command writes anything into it.

A study folder is of one kind: *trained* (``losslens train``: its checkpoints carry the hash of the
config they were trained with) or *imported* (``losslens import``: checkpoints trained elsewhere,
marked ``external``). A command writes into a folder only when it is empty, new, or of the same kind;
and a trained study's config may change only where training did not depend on it (evaluation,
analysis, checkpoint cadence): a change to what training produced is refused, naming the field, never
silently applied to checkpoints made under the old value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import yaml

from losslens import contracts
from losslens.config import StudyConfig
from losslens.errors import ConfigError

TRAINED, IMPORTED = "trained", "imported"
TRAINING_SECTIONS = ("model", "data", "budgets", "train")  # with the corpus seed: StudyConfig.hash()


def _latest_checkpoints(out: Path) -> list[Path]:
    return [contracts.list_checkpoints(run)[-1] for run in contracts.list_runs(out)]


def study_kind(out: Path) -> Optional[str]:
    """``TRAINED`` or ``IMPORTED`` for a folder holding checkpoints, else None (new, empty, no runs yet)."""
    for ckpt in _latest_checkpoints(out):
        try:
            meta = contracts.read_meta(ckpt)
        except (OSError, ValueError):
            continue  # a damaged meta.json is reported by the stage that reads it
        if isinstance(meta, dict):
            return IMPORTED if meta.get("external") else TRAINED
    return None


def require_kind(out: Path, kind: str, what: str) -> None:
    """Refuse to write ``what`` into a folder that holds a study of another kind."""
    found = study_kind(out)
    if found is not None and found != kind:
        raise ConfigError(f"{out}: holds {'an' if found == IMPORTED else 'a'} {found} study; {what} would mix {kind} runs into it "
                          f"(choose a new or empty folder)")


def require_own_data_folder(out: Path) -> None:
    """Refuse an ``OUT/data`` that losslens did not write: token shards replace that folder as a whole."""
    data = out / contracts.DATA_DIR
    if data.exists() and not (data / contracts.DATA_META_FILE).is_file():
        raise ConfigError(f"{data}: exists and is not a losslens data folder (no {contracts.DATA_META_FILE}); "
                          f"it would be replaced (choose a new or empty folder)")


def _flatten(node, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        return {k: v for key, sub in node.items() for k, v in _flatten(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}


def training_changes(study: StudyConfig, ckpt: Path) -> list[str]:
    """``field: trained -> now`` for each field of the training sections that differs from the config the
    checkpoint was trained with (its copy of study.yaml); fields one of them lacks do not count."""
    try:
        trained = yaml.safe_load((ckpt / contracts.STUDY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return []
    if not isinstance(trained, dict):
        return []
    now = study.to_dict()
    old = _flatten({k: trained.get(k) for k in TRAINING_SECTIONS if k in trained})
    new = _flatten({k: now[k] for k in TRAINING_SECTIONS if k in trained})
    return [f"{k}: {old[k]!r} -> {new[k]!r}" for k in old if k in new and old[k] != new[k]]


def check_unchanged_since_training(study: StudyConfig, out: Path, *, strict: bool) -> None:
    """Refuse a config whose training fields differ from those the folder's checkpoints were trained with.

    ``strict`` (training, which resumes from these checkpoints) refuses any other config hash; otherwise
    (evaluation) only a change this module can name, so that a config field added by a later version
    of losslens, with its default, does not block reading an older study.
    """
    expected = study.hash()
    for ckpt in _latest_checkpoints(out):
        try:
            meta = contracts.read_meta(ckpt)
        except (OSError, ValueError):
            continue
        trained_with = meta.get("config_hash") if isinstance(meta, dict) else None
        if trained_with is None or trained_with == expected:
            continue
        changes = training_changes(study, ckpt)
        if changes or strict:
            what = "; ".join(changes) if changes else "the training config differs"
            raise ConfigError(
                f"{study.source}: {what} since {ckpt.parent.name} was trained in {out}: a change to what "
                f"training produced is refused (restore it, or use a new out_dir)")
