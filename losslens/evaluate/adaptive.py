"""Adaptive sweeps (``losslens evaluate --adaptive``): spend task evaluations where the threshold is.

The pretraining loss, the x-axis of every point, is evaluated on every checkpoint that some task
visits (a checkpoint without it has no row in ``results.csv``), and only there: with the model's load
it was about a third of the demo's full sweep. The coarse pass includes each run's last checkpoint
(unless a budget cuts it short), so the scaling law's decayed points are there. With no tasks, the loss
is evaluated everywhere. The tasks are evaluated in rounds:

1. **Coarse pass**: in every run the first ``coarse`` checkpoints of the coarse-to-fine order (with
   the default 5: first, last, middle and quarters; :mod:`losslens.evaluate.order`).
2. **Refinement**, per task, on its headline metric (its first discontinuous metric, accuracy or
   exact match, as analyze's reference threshold; else its first metric). Within each run, two
   neighbouring evaluated checkpoints (by tokens, along which the loss falls) with unevaluated ones
   between them form a *gap*; the checkpoint in the middle of a gap is evaluated next when
   * the metric **moves** across the gap: the two confidence intervals (``ci_low``..``ci_high``) do
     not overlap, or
   * the gap's losses reach into the **provisional threshold's** interval: η and its bootstrap
     interval from the threshold judge on the task's points so far (analyze's threshold, passed in
     from above as a callable: :func:`losslens.adaptive_judge.provisional_eta`; evaluation never
     imports analysis).
3. A task is **done** when its verdict is emergent and η's interval is narrower than ``eta_width``
   nats, or when no gap qualifies. The sweep stops when every task is done or the ``budget`` of
   task units (checkpoint x task, the coarse pass included) is spent; gaps around η go first,
   then the widest.

Everything is written as a normal sweep writes it, so ``analyze`` reads the partial table and a later
full ``losslens evaluate`` computes only the units skipped here (the rest are up to date by
fingerprint). The selection depends only on the results, so re-running it recomputes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol

from losslens import contracts
from losslens.evaluate.config import AdaptiveConfig
from losslens.errors import ConfigError
from losslens.evaluate.order import bisection_order, coarse_to_fine
from losslens.evaluate.units import Unit

ETA, MOVES = "eta", "moves"  # why a gap is refined

# The threshold judge: (run -> points so far, chance, higher is better, bootstrap draws) -> provisional η,
# None where it places none. Given by the caller (the face), so evaluation needs no analysis import.
Judge = Callable[[dict[str, list["Point"]], Optional[float], bool, int], Optional["Eta"]]


# ---------------------------------------------------------------- selection (pure)


@dataclass(frozen=True)
class Point:
    """One evaluated checkpoint of one task: its place in its run (by tokens), loss and metric."""

    position: int
    loss: float
    value: float
    ci_low: float = math.nan  # nan: no interval, the value alone
    ci_high: float = math.nan

    def interval(self) -> tuple[float, float]:
        lo, hi = self.ci_low, self.ci_high
        return (self.value, self.value) if math.isnan(lo) or math.isnan(hi) else (lo, hi)


@dataclass(frozen=True)
class Gap:
    """Unevaluated checkpoints of one run between two evaluated neighbours, and why to look inside."""

    run: str
    lo: int  # positions of the evaluated neighbours
    hi: int
    reason: str  # ETA or MOVES

    def candidates(self, taken: set[int]) -> list[int]:
        """Positions strictly inside, nearest the middle first, without those already taken."""
        mid = (self.lo + self.hi) / 2
        return sorted((p for p in range(self.lo + 1, self.hi) if p not in taken), key=lambda p: (abs(p - mid), p))


@dataclass(frozen=True)
class Eta:
    """The provisional threshold of a task: η and its interval (equal to η when there is none)."""

    eta: float
    ci_low: float
    ci_high: float
    verdict: str
    emergent: bool = False  # the judge's verdict is "emergent": η may converge

    @property
    def width(self) -> float:
        return self.ci_high - self.ci_low


def moves(a: Point, b: Point) -> bool:
    """Does the metric change between two points by more than their intervals (which do not overlap)?"""
    (alo, ahi), (blo, bhi) = a.interval(), b.interval()
    return max(alo, blo) > min(ahi, bhi)


def reaches(a: Point, b: Point, eta: Eta) -> bool:
    """Do the losses between two points overlap η's interval?"""
    return max(min(a.loss, b.loss), eta.ci_low) <= min(max(a.loss, b.loss), eta.ci_high)


def coarse_positions(n: int, coarse: int) -> list[int]:
    """The coarse pass of a run of ``n`` checkpoints: the first ``coarse`` of the bisection order."""
    return bisection_order(n)[:coarse]


def gaps_to_refine(runs: dict[str, list[Point]], eta: Optional[Eta]) -> list[Gap]:
    """The gaps of one task worth a look (module docstring, step 2), around η first, then widest first."""
    gaps = []
    for run, points in runs.items():
        points = sorted(points, key=lambda p: p.position)
        for a, b in zip(points, points[1:]):
            if b.position - a.position < 2:
                continue
            if eta is not None and reaches(a, b, eta):
                gaps.append(Gap(run, a.position, b.position, ETA))
            elif moves(a, b):
                gaps.append(Gap(run, a.position, b.position, MOVES))
    return sorted(gaps, key=lambda g: (g.reason != ETA, -(g.hi - g.lo), g.run, g.lo))


def converged(eta: Optional[Eta], eta_width: float) -> bool:
    return eta is not None and eta.emergent and eta.width < eta_width


def budget_units(budget: Optional[float], total: int) -> int:
    """The budget in task units: ``budget`` >= 1 counts units, below 1 is a fraction of ``total``; None: all."""
    if budget is None:
        return total
    return min(total, int(budget) if budget >= 1 else math.floor(budget * total))


# ---------------------------------------------------------------- the driver


class Evaluator(Protocol):
    """What the adaptive sweep asks of the sweep (:mod:`losslens.evaluate.sweep`)."""

    def run(self, ckpt: Path, units: list[Unit]) -> None: ...

    def result(self, ckpt: Path, unit: Unit) -> Optional[dict]: ...


@dataclass
class TaskState:
    """One task's progress: the checkpoints chosen for it (run -> positions), its η, why it stopped."""

    unit: Unit
    chosen: dict[str, set[int]]
    eta: Optional[Eta] = None
    metric: str = ""
    stopped: str = ""  # "η converged", "settled", "budget"

    def units(self) -> int:
        return sum(len(p) for p in self.chosen.values())


@dataclass
class AdaptiveReport:
    rounds: int = 0
    units: int = 0  # task units chosen (evaluated now or before)
    total: int = 0  # task units of the full sweep
    skipped: dict[str, list[Path]] = field(default_factory=dict)  # task -> checkpoints not evaluated
    with_loss: set[Path] = field(default_factory=set)  # checkpoints whose pretraining loss was evaluated
    tasks: dict[str, TaskState] = field(default_factory=dict)


def run_adaptive(runs: dict[str, list[Path]], units: list[Unit], evaluator: Evaluator, settings: AdaptiveConfig,
                 log: Callable[[str], None], judge: Judge) -> AdaptiveReport:
    """The adaptive sweep over ``runs`` (name -> checkpoints by tokens); ``units[0]`` is the pretraining loss;
    ``judge`` places the provisional threshold (:data:`Judge`)."""
    pretrain, tasks = units[0], units[1:]
    report = AdaptiveReport(total=sum(map(len, runs.values())) * len(tasks))
    limit = budget_units(settings.budget, report.total)
    _check_budget_covers_ends(runs, len(tasks), limit, settings.budget)
    coarse = _coarse_pass(runs, limit // max(len(tasks), 1), settings.coarse)
    report.tasks = {t.name: TaskState(t, {r: set(p) for r, p in coarse.items()}) for t in tasks}
    place = {ckpt: (run, p) for run, ckpts in runs.items() for p, ckpt in enumerate(ckpts)}
    for ckpt in coarse_to_fine(list(runs.values())):  # the coarse checkpoints: loss and tasks
        run, position = place[ckpt]
        if position in coarse[run] or not tasks:
            report.with_loss.add(ckpt)
            evaluator.run(ckpt, [pretrain] + tasks)
    while True:
        picks = _plan_round(runs, pretrain, report, evaluator, settings, limit, judge)
        if not picks:
            break
        report.rounds += 1
        log(f"adaptive: round {report.rounds}: {sum(map(len, picks.values()))} units on {len(picks)} checkpoints")
        for ckpt, chosen in picks.items():
            first_visit = ckpt not in report.with_loss
            report.with_loss.add(ckpt)
            evaluator.run(ckpt, ([pretrain] if first_visit else []) + chosen)
    report.units = sum(s.units() for s in report.tasks.values())
    report.skipped = {name: [ckpts[p] for run, ckpts in runs.items() for p in range(len(ckpts))
                             if p not in s.chosen[run]] for name, s in report.tasks.items()}
    _log_report(report, runs, settings, log)
    return report


def _check_budget_covers_ends(runs: dict[str, list[Path]], n_tasks: int, limit: int, budget: Optional[float]) -> None:
    """A budget below the first and last checkpoint of every run, for each task, places no threshold: it
    would evaluate next to nothing and report the tasks "settled"."""
    needed = n_tasks * sum(min(2, len(ckpts)) for ckpts in runs.values())
    if limit < needed:
        total = n_tasks * sum(map(len, runs.values()))
        raise ConfigError(f"--budget / eval.adaptive.budget {budget:g}: {limit} task units cannot hold the first and "
                          f"last checkpoint of every run for each task ({needed} of the full sweep's {total}); "
                          f"give at least {needed} or a larger fraction")


def _coarse_pass(runs: dict[str, list[Path]], per_task: int, coarse: int) -> dict[str, list[int]]:
    """run -> positions of the coarse pass, cut to ``per_task`` checkpoints in coarse-to-fine order."""
    order = [(step, r, p) for r, ckpts in enumerate(runs.values())
             for step, p in enumerate(coarse_positions(len(ckpts), coarse))]
    kept = sorted(order)[:per_task]
    names = list(runs)
    return {name: [p for _, r, p in kept if names[r] == name] for name in names}


def _plan_round(runs, pretrain: Unit, report: AdaptiveReport, evaluator: Evaluator, settings: AdaptiveConfig,
                limit: int, judge: Judge) -> dict[Path, list[Unit]]:
    """Checkpoint -> task units to evaluate next, within the budget; {} when the sweep is over."""
    left = limit - sum(s.units() for s in report.tasks.values())
    wanted: list[tuple[TaskState, Gap]] = []
    for state in report.tasks.values():
        if state.stopped:
            continue
        points, chance, higher = _points(runs, pretrain, state, evaluator)
        state.eta = judge(points, chance, higher, settings.n_bootstrap) if points else None
        gaps = [] if converged(state.eta, settings.eta_width) else gaps_to_refine(points, state.eta)
        if not gaps:
            state.stopped = "η converged" if converged(state.eta, settings.eta_width) else "settled"
        wanted += [(state, g) for g in gaps]
    wanted.sort(key=lambda sg: (sg[1].reason != ETA, -(sg[1].hi - sg[1].lo)))  # across tasks, as within one
    picks: dict[Path, list[Unit]] = {}
    for state, gap in wanted:
        if left <= 0:
            state.stopped = state.stopped or "budget"
            continue
        taken = state.chosen[gap.run]
        inside = gap.candidates(taken)
        if inside:
            taken.add(inside[0])
            picks.setdefault(runs[gap.run][inside[0]], []).append(state.unit)
            left -= 1
    return picks


def _points(runs, pretrain: Unit, state: TaskState, evaluator: Evaluator):
    """run -> the task's points so far on its headline metric, with the metric's chance and direction."""
    points: dict[str, list[Point]] = {}
    chance = None
    for run, positions in state.chosen.items():
        for p in sorted(positions):
            ckpt = runs[run][p]
            task, loss = evaluator.result(ckpt, state.unit), evaluator.result(ckpt, pretrain)
            if task is None or loss is None:  # computed by another evaluator that has not finished
                continue
            state.metric = state.metric or headline_metric(task["metrics"])
            m = task["metrics"][state.metric]
            chance = m.get("chance") if chance is None else chance
            points.setdefault(run, []).append(Point(
                p, loss["metrics"]["loss"]["value"], m["value"], _float_or_nan(m.get("ci_low")), _float_or_nan(m.get("ci_high"))))
    return points, chance, contracts.metric_info(state.metric).higher_is_better if state.metric else True


def headline_metric(metrics: dict) -> str:
    """The metric that steers a task: its first discontinuous one (accuracy, exact match), else its first."""
    return next((m for m in metrics if contracts.metric_info(m).discontinuous), next(iter(metrics)))


def _float_or_nan(v) -> float:
    return math.nan if v is None else float(v)


# ---------------------------------------------------------------- what was skipped


def positions_text(positions: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8' (checkpoint positions within a run, by tokens, from 0)."""
    spans: list[list[int]] = []
    for p in sorted(positions):
        if spans and p == spans[-1][1] + 1:
            spans[-1][1] = p
        else:
            spans.append([p, p])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


def _log_report(report: AdaptiveReport, runs: dict[str, list[Path]], settings: AdaptiveConfig, log) -> None:
    share = report.units / report.total if report.total else 0.0
    log(f"adaptive: {report.units} of {report.total} task units evaluated ({share:.0%}) in {report.rounds} "
        f"rounds after the coarse pass; the pretraining loss on the {len(report.with_loss)} of "
        f"{sum(map(len, runs.values()))} checkpoints they visit")
    for name, state in report.tasks.items():
        eta = state.eta
        where = (f"η {eta.eta:.3f} [{eta.ci_low:.3f}, {eta.ci_high:.3f}] ({eta.verdict})" if eta
                 else "no threshold")
        skipped = report.skipped[name]
        by_run = {run: [p for p, c in enumerate(ckpts) if c in set(skipped)] for run, ckpts in runs.items()}
        listed = "; ".join(f"{run} {positions_text(ps)}" for run, ps in by_run.items() if ps)
        log(f"adaptive: {name} ({state.metric or '?'}): {where}, {state.stopped or 'settled'} "
            f"(--eta-width {settings.eta_width:g}); skipped {len(skipped)} checkpoints"
            + (f": {listed} (positions by tokens, from 0)" if listed else ""))
