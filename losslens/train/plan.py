"""The runs of a study and, for each, its steps, checkpoint steps and (WSD) branch point.

Everything here is arithmetic on the config, decided before any training starts, so a job array
(``--run NAME``) and a full sweep agree on what each run is.

Budgets and checkpoint token counts are rounded to whole optimizer steps of
``global_batch x context`` tokens; a checkpoint records the tokens actually seen.

Run names are ``<size>_<budget>`` (``s_1.2M``); in a study of several seeds they end in the seed,
``_seed<N>`` (``s_1.2M_seed1``), or ``_init<I>-data<D>`` when the two seeds differ (``s_1.2M_init1-data0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from losslens.config import StudyConfig
from losslens.counts import format_count
from losslens.errors import ConfigError
from losslens.train.config import MAX_CHECKPOINTS, ModelSize, Seed


@dataclass(frozen=True)
class Branch:
    """A WSD branch starts from the trunk run's checkpoint at ``step`` and decays to its own budget."""

    trunk: str  # run name of the largest budget of the same size and seed
    step: int


@dataclass(frozen=True)
class RunPlan:
    name: str
    size_name: str
    size: ModelSize
    budget_tokens: int
    context: int
    tokens_per_step: int
    total_steps: int
    warmup_steps: int
    decay_start: int  # first step of the LR decay (wsd); 0 for cosine
    checkpoint_steps: tuple[int, ...]
    keep_state_steps: tuple[int, ...]  # checkpoints whose training state other runs branch from
    seed: Seed = Seed(init=0, data=0)
    branch: Optional[Branch] = None

    def tokens_at(self, step: int) -> int:
        return step * self.tokens_per_step


def run_name(size_name: str, budget: int, seed: Optional[Seed] = None) -> str:
    """``s_1.2M``; with ``seed`` (a study of several seeds) ``s_1.2M_seed1`` or ``s_1.2M_init1-data0``."""
    name = f"{size_name}_{format_count(budget)}"
    if seed is None:
        return name
    return f"{name}_seed{seed.init}" if seed.init == seed.data else f"{name}_{seed.label}"


def _checkpoint_steps(study: StudyConfig, total: int, tokens_per_step: int) -> set[int]:
    c = study.checkpoints
    steps = {total}
    if c.every > 0:
        every = max(1, round(c.every / tokens_per_step))
        if total // every > MAX_CHECKPOINTS:  # refused before a set of a billion steps is built
            raise ConfigError(f"{study.source}: checkpoints.every: {c.every} tokens gives {total // every:,} "
                              f"checkpoints in a run of {total:,} steps; at most {MAX_CHECKPOINTS:,}")
        steps.update(range(every, total + 1, every))
    elif c.count > 0:
        steps.update(max(1, round(total * i / c.count)) for i in range(1, c.count + 1))
    if c.log_spaced:
        first_linear = min(steps)
        k = 1
        while k < first_linear:
            steps.add(k)
            k *= 2
    steps.update(max(1, round(t / tokens_per_step)) for t in c.at if round(t / tokens_per_step) <= total)
    return {s for s in steps if 1 <= s <= total}


def plan_runs(study: StudyConfig) -> list[RunPlan]:
    """Every run of the grid: seed by seed, sizes smallest first, within a size the WSD trunk (largest
    budget) first."""
    named = len(study.seeds) > 1  # a one-seed study keeps the names it always had
    return [plan for seed in study.seeds for size_name, size in study.model.resolved_sizes().items()
            for plan in _size_plans(study, size_name, size, seed, seed if named else None)]


def _size_plans(study: StudyConfig, size_name: str, size: ModelSize, seed: Seed, name_seed: Optional[Seed]) -> list[RunPlan]:
    """The runs of one size and seed, one per budget; WSD branches start from this seed's trunk."""
    sched = study.train.schedule
    context = size.context_or(study.model.context)
    tps = study.train.global_batch * context
    budgets = sorted(study.budgets, reverse=True)
    trunk_steps = max(1, round(budgets[0] / tps))
    trunk_name = run_name(size_name, budgets[0], name_seed)
    branch_points: list[int] = []
    size_plans = []
    for budget in budgets:
        total = max(1, round(budget / tps))
        if sched.kind == "cosine":
            warmup = round(sched.warmup * total)
            decay_start, branch = 0, None
            ckpts = _checkpoint_steps(study, total, tps)
        else:
            # One warmup for the whole size, so that all branches share the trunk's stable phase.
            warmup = round(sched.warmup * trunk_steps)
            decay_start = total - max(1, round(sched.cooldown * total))
            if decay_start <= warmup:
                raise ConfigError(
                    f"{study.source}: train.schedule: budget {format_count(budget)} of size {size_name} "
                    f"decays from step {decay_start}, before the warmup ends at step {warmup}"
                )
            ckpts = _checkpoint_steps(study, total, tps)
            if budget == budgets[0]:
                branch = None
            else:
                branch = Branch(trunk=trunk_name, step=decay_start)
                branch_points.append(decay_start)
                ckpts = {s for s in ckpts if s > decay_start} | {total}
        size_plans.append(
            dict(name=run_name(size_name, budget, name_seed), size_name=size_name, size=size, budget_tokens=budget,
                 context=context, tokens_per_step=tps, total_steps=total, warmup_steps=warmup,
                 decay_start=decay_start, checkpoint_steps=ckpts, seed=seed, branch=branch)
        )
    plans = []
    for p in size_plans:
        keep = tuple(sorted(branch_points)) if p["branch"] is None and branch_points else ()
        p["checkpoint_steps"] = tuple(sorted(p["checkpoint_steps"] | set(keep)))
        plans.append(RunPlan(keep_state_steps=keep, **p))
    return plans


def find_run(plans: list[RunPlan], name: str) -> RunPlan:
    for p in plans:
        if p.name == name:
            return p
    raise ConfigError(f"--run {name}: no such run (runs: {', '.join(p.name for p in plans)})")
