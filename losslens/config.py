"""Loading and validating a study config: YAML -> typed dataclasses, with errors that name file and field.

The dataclasses themselves live beside the stage they configure (``losslens.train.config``,
``losslens.evaluate.config``, ``losslens.analyze.config``); this module composes them into
:class:`StudyConfig`, applies ``key=value`` overrides, and turns every mistake into a
:class:`ConfigError` such as::

    configs/tiny.yaml: train.glbal_batch: unknown key (did you mean 'global_batch'?)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from losslens.analyze.config import AnalyzeConfig, forecast_problem
from losslens.counts import format_count
from losslens.errors import ConfigError
from losslens.evaluate.config import EvalConfig, adaptive_problem
from losslens.paths import local_path
from losslens.records import build_dataclass, convert, read_yaml_mapping
from losslens.schema import PositiveInt, SeedInt, load_yaml
from losslens.train.config import (
    CheckpointConfig,
    MAX_VOCAB,
    MIN_BPE_VOCAB,
    DataConfig,
    ModelConfig,
    ScheduleConfig,
    Seed,
    TrainConfig,
)


@dataclass
class StudyConfig:
    """One study: a grid of model sizes x data budgets x seeds trained on one token stream."""

    name: str
    model: ModelConfig
    data: DataConfig
    budgets: list[PositiveInt]  # training tokens per run
    out_dir: str = ""  # default: checkpoints/<name>
    # Replicates of every run, read as N or {init: I, data: D} and held as Seeds. `seed: N` in the YAML
    # is one seed, and is how a one-seed study is written back (its study.yaml stays as it was).
    seeds: list[Union[SeedInt, Seed]] = field(default_factory=lambda: [0])
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoints: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)
    source: str = field(default="", init=False)  # the file it was read from (not part of the YAML)

    def __post_init__(self) -> None:
        self.seeds = [s if isinstance(s, Seed) else Seed(init=s, data=s) for s in self.seeds]

    @property
    def output_dir(self) -> Path:
        return Path(self.out_dir or f"checkpoints/{self.name}")

    @property
    def corpus_seed(self) -> int:
        """Seed of what all runs share: the generated corpus, the tokenizer and the validation split.

        The first seed's data seed, so a one-seed study builds the stream it always did.
        """
        return self.seeds[0].data

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source")
        seeds = [s.init if s.init == s.data else {"init": s.init, "data": s.data} for s in self.seeds]
        if len(seeds) == 1 and isinstance(seeds[0], int):
            # As one-seed studies were always written: their study.yaml and config hash stay the same.
            return {("seed" if k == "seeds" else k): v for k, v in (d | {"seeds": seeds[0]}).items()}
        return d | {"seeds": seeds}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def hash(self, *, sections: tuple[str, ...] = ("model", "data", "budgets", "seed", "train")) -> str:
        """Hash of what determines the trained weights (not the output folder, cadence or eval).

        Of the seeds only the corpus seed: a run's own seeds are in its meta.json, which resuming checks,
        so seeds can be added to a study without retraining the runs it has. (A one-seed study hashes as
        it did before studies had seeds.)
        """
        d = self.to_dict() | {"seed": self.corpus_seed}
        d["train"] = {k: v for k, v in d["train"].items() if k != "trackers"}  # where it is logged changes no weight
        blob = json.dumps({k: d[k] for k in sections}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- loading


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, Any]]:
    """``["train.lr=1e-3", "budgets=[1M,2M]"]`` -> [(dotted key, YAML-parsed value)]."""
    parsed = []
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.global_batch=64")
        key, raw = item.split("=", 1)
        value = load_yaml(raw, f"override {item!r}") if raw.strip() else ""  # the one loader: keys twice refused
        parsed.append((key.strip(), value))
    return parsed


_SEED_KEYS = {"seed": "seeds", "seeds": "seed"}  # each spelling -> the other


def _seed_alias(raw: dict, file: str) -> dict:
    """``seed: N`` is ``seeds: [N]``; a config gives one or the other."""
    if "seed" not in raw:
        return raw
    if "seeds" in raw:
        raise ConfigError(f"{file}: seed: give seed (one seed) or seeds (a list), not both")
    if isinstance(raw["seed"], list):
        raise ConfigError(f"{file}: seed: one seed is an integer; write several as seeds: {raw['seed']}")
    seed = convert(SeedInt, raw["seed"], "seed", file)
    return {("seeds" if k == "seed" else k): v for k, v in (raw | {"seed": [seed]}).items()}


def load_study(path: str | Path, overrides: list[str] | None = None) -> StudyConfig:
    """Read, override, type-check and validate a study config."""
    path = Path(path)
    file = str(path)
    raw = read_yaml_mapping(path, "study config")
    for key, value in parse_overrides(overrides):
        if key in _SEED_KEYS:  # an override of either spelling replaces the file's seeds
            raw.pop(_SEED_KEYS[key], None)
        _set_dotted(raw, key, value)
    study = build_dataclass(StudyConfig, _seed_alias(raw, file), "", file)
    study.source = file
    resolve_paths(study, path.parent)
    validate(study)
    return study


def study_from_dict(raw: dict, file: str = "<dict>") -> StudyConfig:
    study = build_dataclass(StudyConfig, _seed_alias(raw, file), "", file)
    study.source = file
    validate(study)
    return study


def resolve_paths(study: StudyConfig, base: Path) -> None:
    """Relative paths are taken relative to the config file, if they exist there (else to the working directory)."""

    def fix(p: str) -> str:
        # local_path, except that a path stays exactly as written unless it is found only under the config's
        # folder: a path found nowhere is not moved under it. Data and tokenizer paths are in the config hash
        # that resuming checks, and RUN_DIR/study.yaml (its paths resolved once already) is read again from
        # other working directories, where they may be found nowhere; moving them would change the hash.
        found = local_path(p, base)
        moved = found is not None and found != Path(p)  # not as given: under the config's folder
        return str(found) if moved and found.exists() else p

    def absolute(p: str) -> str:
        # Evaluation inputs are stored absolute in RUN_DIR/study.yaml, so that `losslens evaluate RUN_DIR`
        # finds them from any directory and after the study folder moves. (Not the data paths: they
        # are part of the config hash that resuming checks.)
        if not Path(fix(p)).exists():
            return p
        full, home = os.path.abspath(fix(p)), os.path.abspath(study.output_dir)
        return os.path.relpath(full, home) if full.startswith(home + os.sep) else full  # inside: travels along

    study.data.paths = [fix(p) for p in study.data.paths]
    if study.data.tokenizer.path:
        study.data.tokenizer.path = fix(study.data.tokenizer.path)
    study.eval.tasks = [absolute(t) for t in study.eval.tasks]
    if study.eval.lm_eval_include:
        study.eval.lm_eval_include = absolute(study.eval.lm_eval_include)



def _validate_eval(e: EvalConfig, fail) -> None:
    problem = adaptive_problem(e.adaptive)
    if problem:
        fail(f"eval.adaptive.{problem[0]}", problem[1])


def _validate_seeds(seeds: list[Seed], fail) -> None:
    if not seeds:
        fail("seeds", "give at least one seed")
    for i, seed in enumerate(seeds):
        if seed in seeds[:i]:
            fail(f"seeds[{i}]", f"repeats seeds[{seeds.index(seed)}] (init {seed.init}, data {seed.data})")


def _validate_sizes(sizes: dict, fail) -> None:
    if not sizes:
        fail("model.sizes", "no model sizes: give model.sizes or model.ladder")
    for name, size in sizes.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", name):
            fail(f"model.sizes.{name}", "size names must be letters, digits, '-' or '.' (no '_')")
        where = f"model.sizes.{name}"
        if size.width % size.heads:
            fail(f"{where}.heads", f"{size.heads} heads do not divide width {size.width}")
        if size.kv_heads and size.heads % size.kv_heads:
            fail(f"{where}.kv_heads", f"{size.kv_heads} KV heads do not divide {size.heads} heads")


def _validate_budget_list(budgets: list[int], fail) -> None:
    if not budgets:
        fail("budgets", "give at least one data budget (tokens per run)")
    if len(set(budgets)) != len(budgets):
        fail("budgets", "budgets repeat")


def _validate_train(t: TrainConfig, fail) -> None:
    if t.global_batch % t.micro_batch:
        fail("train.micro_batch", f"{t.micro_batch} does not divide global_batch {t.global_batch}")


def _validate_budget_sizes(study: StudyConfig, sizes: dict, fail) -> None:
    """Each budget is positive and holds at least one global batch of every size (so after the train checks)."""
    batch = study.train.global_batch
    for i, budget in enumerate(study.budgets):
        for name, size in sizes.items():
            per_step = batch * size.context_or(study.model.context)
            if budget < per_step:
                fail(
                    f"budgets[{i}]",
                    f"{format_count(budget)} tokens is less than one global batch of size {name} "
                    f"({batch} x {size.context_or(study.model.context)} = {per_step} tokens)",
                )


def _validate_schedule(sched: ScheduleConfig, fail) -> None:
    if sched.kind == "wsd" and not 0 < sched.cooldown < 1:
        fail("train.schedule.cooldown", f"a fraction of each budget in (0, 1), got {sched.cooldown}")


def _validate_data(d: DataConfig, fail) -> None:
    if d.source == "files" and not d.paths:
        fail("data.paths", "no corpus files: give data.paths (or data.source: demo)")
    if d.tokenizer.kind == "pretrained" and not d.tokenizer.path:
        fail("data.tokenizer.path", "a pretrained tokenizer needs a local directory")
    vocab = d.tokenizer.vocab_size
    if d.tokenizer.kind == "bpe" and not MIN_BPE_VOCAB <= vocab <= MAX_VOCAB:
        fail("data.tokenizer.vocab_size", f"a BPE vocabulary holds {MIN_BPE_VOCAB} (the 256 bytes and 2 special "
             f"tokens) to {MAX_VOCAB:,} tokens, got {vocab:,}")


def validate(study: StudyConfig) -> None:
    """Cross-field checks the types cannot express, section by section; the first problem is reported."""
    file = study.source or "<config>"

    def fail(where: str, why: str) -> typing.NoReturn:
        raise ConfigError(f"{file}: {where}: {why}")

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", study.name):
        fail("name", f"{study.name!r} must be letters, digits, '_', '-' or '.'")
    sizes = study.model.resolved_sizes()
    _validate_sizes(sizes, fail)
    _validate_seeds(study.seeds, fail)
    _validate_budget_list(study.budgets, fail)
    _validate_train(study.train, fail)
    _validate_budget_sizes(study, sizes, fail)
    _validate_schedule(study.train.schedule, fail)
    _validate_data(study.data, fail)
    if study.out_dir and Path(study.out_dir).exists() and not Path(study.out_dir).is_dir():
        fail("out_dir", f"{study.out_dir} is a file, not a folder")
    _validate_eval(study.eval, fail)
    problem = forecast_problem(study.analyze.forecast)
    if problem:
        fail(f"analyze.forecast.{problem[0]}", problem[1])
