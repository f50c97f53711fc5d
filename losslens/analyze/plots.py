"""Figures of an analysis, as PNG and PDF under ``plots/``.

* ``task_<task>``: each metric of the task against pretraining loss (loss decreasing to the
  right, as in Du et al. 2024; or the stand-in the table names in ``x_label``), discontinuous metrics first; one colour per model size, one
  marker per data budget, a line through each run's checkpoints, chance, the preferred fit and
  the threshold with its confidence band. With several seeds of a size, each seed's run is a thin
  line in its size's colour and the mean over seeds a thick one.
* ``contrast_<task>``: the same against loss, parameters (final checkpoints) and compute, with
  the alignment R^2 of loss and compute in the column titles.
* ``training``: loss against tokens per run; loss against compute with the fitted scaling law.
* ``overview``: every task x metric in one grid.

Matplotlib is used through ``Figure`` objects only (no pyplot), so no global backend or state
is touched. Colours are Okabe & Ito's colour-blind-safe palette.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter

from losslens.analyze.parallel import fork_map, max_workers
from losslens.analyze.threshold import EMERGENT
from losslens.contracts import metric_info
from losslens.counts import count_label
from losslens.fsio import atomic_write_bytes

# Okabe & Ito (2008), reordered so the first colours are the most distinct; yellow last-but-one.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
STYLE = {
    "font.size": 8, "axes.titlesize": 8.5, "axes.labelsize": 8, "legend.fontsize": 7.5,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.25, "grid.linewidth": 0.5, "lines.linewidth": 1.0,
    "savefig.dpi": 200,
}


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "task"


class Styles:
    """Colour per model size, marker per data budget, shared by every figure of a study; ``ci_level`` is the
    confidence level of the threshold bands, for the legend."""

    def __init__(self, table, ci_level: float = 0.95):
        self.table, self.ci_level = table, ci_level
        sizes = table.sizes()
        self.colour = {n: OKABE_ITO[i % len(OKABE_ITO)] for i, n in enumerate(sizes)}
        self.marker = {b: MARKERS[i % len(MARKERS)] for i, b in enumerate(table.budgets())}
        self.seeded = table.has_seeds()

    def of_run(self, run: str) -> tuple[str, str]:
        return self.colour[self.table.run_size(run)], self.marker[self.table.run_budget(run)]

    def run_line(self, compact: bool = False) -> dict:
        """How one run's line is drawn: as a thin line under the seed mean when sizes have several seeds."""
        if self.seeded:
            return {"lw": 0.6, "ms": 2.2, "alpha": 0.55}
        return {"lw": 0.9, "ms": 3.2 if compact else 4, "alpha": 0.85}

    def legend_handles(self, extras: bool = True) -> list:
        t = self.table
        h = [Line2D([], [], color=c, marker="o", ms=4, label=f"{t.size_label(n)} params") for n, c in self.colour.items()]
        h += [Line2D([], [], color="0.3", ls="none", marker=m, ms=4, label=f"{count_label(b)} tokens")
              for b, m in self.marker.items()]
        if self.seeded:
            h += [Line2D([], [], color="0.3", lw=0.6, alpha=0.6, label="one seed"),
                  Line2D([], [], color="0.3", lw=2.0, label="mean over seeds")]
            if extras:
                h.append(Line2D([], [], color="0.25", ls="none", marker="|", ms=7, mew=1.2, label="η of one seed"))
        if extras:
            h += [Line2D([], [], color="0.45", ls=":", label="chance"),
                  Line2D([], [], color="k", lw=1.3, alpha=0.75, label="preferred fit"),
                  Patch(facecolor="0.5", alpha=0.25, edgecolor="0.2", ls="--",
                        label=f"threshold η, {self.ci_level:.0%} CI")]
        return h


def analysis_styles(analysis) -> Styles:
    """The styles of an analysis' figures, at the confidence level it was run with (as report.md states it)."""
    return Styles(analysis.table, analysis.settings.get("ci_level", 0.95))


def _legend(fig: Figure, handles: list) -> None:
    """The shared legend below the axes, in as many columns as the figure's width holds (at most 8)."""
    ncol = max(1, min(8, len(handles), int(fig.get_figwidth() / 1.25)))
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, frameon=False)


def _save_figure(fig: Figure, base: Path) -> list[Path]:
    paths = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext)
        # The constrained layout is solved by the first save; freeze it instead of solving it again.
        fig.set_layout_engine("none")
        path = base.with_suffix("." + ext)
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


def _by_run(series, x: np.ndarray):
    """Yield (run, index array sorted by tokens) for each run of a series."""
    for run in dict.fromkeys(series.run.tolist()):
        idx = np.flatnonzero(series.run == run)
        yield run, idx[np.argsort(series.tokens[idx])]


def seed_means(table, runs, tokens: np.ndarray, *values: np.ndarray):
    """Mean over seeds of each (size, budget) with several seeds, at the token counts all its seeds share:
    yields (run of the group, tokens, mean of each of ``values``). ``runs``, ``tokens`` and ``values`` are per point."""
    groups: dict[tuple[int, int], list[str]] = {}
    for run in dict.fromkeys(runs.tolist()):
        groups.setdefault((table.run_size(run), table.run_budget(run)), []).append(run)
    for members in groups.values():
        if len(members) < 2:
            continue
        shared = sorted(set.intersection(*(set(tokens[runs == r].tolist()) for r in members)))
        if len(shared) < 2:
            continue
        means = []
        for v in values:
            at = {r: dict(zip(tokens[runs == r].tolist(), v[runs == r].tolist())) for r in members}
            means.append(np.array([np.mean([at[r][t] for r in members]) for t in shared]))
        yield members[0], np.array(shared), *means


def _draw_seed_means(ax, styles: Styles, runs, tokens, x: np.ndarray, y: np.ndarray) -> None:
    """The thick mean-over-seeds line of each (size, budget), over its seeds' thin lines."""
    for run, _, mx, my in seed_means(styles.table, runs, tokens, x, y):
        colour, marker = styles.of_run(run)
        ax.plot(mx, my, color=colour, lw=2.0, marker=marker, ms=3.5, mec="white", mew=0.4, alpha=0.95, zorder=3.5)


def _ylabel(series) -> str:
    return series.metric + ("" if series.higher_is_better else " (lower is better)")


def draw_metric(ax, ma, styles: Styles, compact: bool = False, errorbars: bool = True) -> None:
    """One task x metric against loss: runs (with the table's intervals as error bars), chance,
    the preferred fit, and the threshold with its band (dotted where the verdict is not emergent)."""
    s, th = ma.series, ma.threshold
    errorbars = errorbars and not styles.seeded  # per-seed error bars would hide the seeds' spread
    for run, idx in _by_run(s, s.x):
        colour, marker = styles.of_run(run)
        has_ci = errorbars and np.isfinite(s.ci_low[idx]).all() and np.isfinite(s.ci_high[idx]).all()
        yerr = np.abs(np.vstack([s.value[idx] - s.ci_low[idx], s.ci_high[idx] - s.value[idx]])) if has_ci else None
        ax.errorbar(s.x[idx], s.value[idx], yerr=yerr, color=colour, marker=marker, elinewidth=0.5, mec="white",
                    mew=0.4, zorder=3, **styles.run_line(compact))
    _draw_seed_means(ax, styles, s.run, s.tokens, s.x, s.value)
    lo, hi = float(s.x.min()), float(s.x.max())
    if th.chance is not None:
        ax.axhline(th.chance, color="0.45", ls=":", lw=1, zorder=1)
    if th.fits and th.preferred:
        grid = np.linspace(lo, hi, 200)
        # Drawn within the values the metric can take: a threshold's sigmoid describes the data, and its
        # free top may pass an accuracy of 1 between the last points.
        curve = np.clip(th.fits[th.preferred].predict(grid), *metric_info(s.metric).bounds)
        ax.plot(grid, curve, color="k", lw=1.3, alpha=0.75, zorder=4)
    if np.isfinite(th.eta):
        sure = th.verdict == EMERGENT
        if np.isfinite(th.ci_low):
            ax.axvspan(th.ci_low, th.ci_high, color="0.5", alpha=0.25 if sure else 0.12, lw=0, zorder=0)
        ax.axvline(th.eta, color="0.2", ls="--" if sure else ":", lw=1, zorder=2)
        ax.annotate(f"η={th.eta:.2f}", (th.eta, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -3),
                    textcoords="offset points", ha="left", va="top", fontsize=6.5 if compact else 7, color="0.2")
    seed_etas = [r["eta"] for r in (ma.seeds or {}).get("per_seed", []) if r["eta"] is not None]
    if seed_etas:  # where each seed alone would put η: ticks on the lower edge
        ax.plot(seed_etas, np.zeros(len(seed_etas)), ls="none", marker="|", ms=7, mew=1.2, color="0.25",
                transform=ax.get_xaxis_transform(), clip_on=False, zorder=5)
    pad = 0.03 * (hi - lo or 1.0)
    ax.set_xlim(hi + pad, lo - pad)  # decreasing loss to the right
    ax.set_title(f"{s.metric}: {th.verdict}" if compact else f"{s.metric} — {th.verdict}", loc="left")
    if not compact:
        ax.set_xlabel(f"{styles.table.x_label} → lower")
        ax.set_ylabel(_ylabel(s))


def task_figure(analysis, task: str, styles: Styles) -> Figure:
    metrics = analysis.table.metrics(task)
    fig = Figure(figsize=(3.2 * len(metrics) + 0.4, 3.3), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, m in zip(axes, metrics):
        draw_metric(ax, analysis.metrics[(task, m)], styles)
    fig.suptitle(f"{task}: performance against {analysis.table.x_label}", fontsize=9.5)
    _legend(fig, styles.legend_handles())
    return fig


def _final_points(s):
    """The last checkpoint of each run in a series: (run, index)."""
    return [(run, idx[-1]) for run, idx in _by_run(s, s.x)]


def contrast_figure(analysis, task: str, styles: Styles) -> Figure:
    """Rows: metrics. Columns: against loss, non-embedding parameters (final checkpoints), compute."""
    metrics = analysis.table.metrics(task)
    fig = Figure(figsize=(9.6, 2.5 * len(metrics) + 0.7), layout="constrained")
    axes = fig.subplots(len(metrics), 3, squeeze=False)
    for row, m in enumerate(metrics):
        ma = analysis.metrics[(task, m)]
        s = ma.series
        draw_metric(axes[row, 0], ma, styles, errorbars=False)  # the task figure has them
        # Against parameters: the classic emergence plot, one point per run at its end of training.
        ax = axes[row, 1]
        finals = _final_points(s)
        for budget in dict.fromkeys(analysis.table.run_budget(r) for r, _ in finals):
            idx = [i for r, i in finals if analysis.table.run_budget(r) == budget]
            idx = sorted(idx, key=lambda i: s.n_params_nonembed[i])
            sizes = np.unique(s.n_params_nonembed[idx])  # the line joins each size's mean over its seeds
            ax.plot(sizes, [s.value[idx][s.n_params_nonembed[idx] == n].mean() for n in sizes], color="0.6", lw=0.8,
                    zorder=1)
            for i in idx:
                colour, marker = styles.of_run(s.run[i])
                ax.plot(s.n_params_nonembed[i], s.value[i], color=colour, marker=marker, ms=5, mec="white",
                        mew=0.4, ls="none", zorder=3)
        ax.set_xscale("log")
        sizes = sorted(set(s.n_params_nonembed.tolist()))
        ax.set_xticks(sizes, [count_label(n) for n in sizes])
        ax.xaxis.set_minor_formatter(NullFormatter())  # else 2x10^5, 3x10^5 ... collide
        ax.set_xlabel("non-embedding parameters (final checkpoints)")
        # Against compute: every checkpoint, a line per run.
        ax = axes[row, 2]
        for run, idx in _by_run(s, s.flops):
            colour, marker = styles.of_run(run)
            ax.plot(s.flops[idx], s.value[idx], color=colour, marker=marker, mec="white", mew=0.4, **styles.run_line())
        _draw_seed_means(ax, styles, s.run, s.tokens, s.flops, s.value)
        ax.set_xscale("log")
        ax.set_xlabel("training compute (FLOPs)")
        for ax in axes[row, 1:]:
            if ma.threshold.chance is not None:
                ax.axhline(ma.threshold.chance, color="0.45", ls=":", lw=1, zorder=0)
            ax.set_ylabel(_ylabel(s))
        r2 = {k: v["r2"] for k, v in ma.alignment.items()}
        fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
        axes[row, 0].set_title(f"{m} vs loss · {ma.threshold.verdict} · R²={fmt(r2['loss'])}", loc="left")
        axes[row, 1].set_title(f"{m} vs parameters", loc="left")
        axes[row, 2].set_title(f"{m} vs compute · R²={fmt(r2['compute'])}", loc="left")
    fig.suptitle(f"{task}: does loss align model sizes better than parameters or compute?  "
                 f"(R²: one curve for all sizes, leave-one-size-out)", fontsize=9)
    _legend(fig, styles.legend_handles())
    return fig


def training_figure(analysis, styles: Styles) -> Figure:
    table, fit = analysis.table, analysis.scaling
    ck = table.checkpoints()
    fig = Figure(figsize=(8.4, 3.4), layout="constrained")
    ax_t, ax_c = fig.subplots(1, 2)
    pos = ck["tokens"] > 0
    k = float(np.median(ck["flops"][pos] / (ck["n_params_nonembed"][pos] * ck["tokens"][pos]))) if pos.any() else 6.0
    for run in table.runs():
        idx = np.flatnonzero((ck["run"] == run) & pos)
        idx = idx[np.argsort(ck["tokens"][idx])]
        colour, marker = styles.of_run(run)
        ax_t.plot(ck["tokens"][idx], ck["x"][idx], color=colour, marker=marker, mec="white", mew=0.4,
                  **styles.run_line())
        ax_c.plot(ck["flops"][idx], ck["x"][idx], color=colour, marker=marker, ms=4, ls="none", mec="white",
                  mew=0.4, alpha=0.9)
        if fit is not None and len(idx):
            N = float(ck["n_params_nonembed"][idx[0]])
            D = np.geomspace(ck["tokens"][idx].min(), ck["tokens"][idx].max(), 100)
            ax_c.plot(k * N * D, fit.predict(N, D), color=colour, ls="--", lw=1, alpha=0.8)
    for ax in (ax_t, ax_c):
        ax.set_xscale("log")
        ax.set_ylabel(table.x_label)
    _draw_seed_means(ax_t, styles, ck["run"][pos], ck["tokens"][pos], ck["tokens"][pos].astype(float), ck["x"][pos])
    ax_t.set_xlabel("training tokens")
    ax_t.set_title("training curves", loc="left")
    ax_c.set_xlabel("training compute (FLOPs)")
    if fit is not None:
        ax_c.set_title("loss vs compute, dashed: fitted scaling law", loc="left")
        ax_c.text(0.97, 0.96, f"$L = {fit.E:.2f} + {fit.A:.3g}/N^{{{fit.alpha:.2f}}} + {fit.B:.3g}/D^{{{fit.beta:.2f}}}$",
                  transform=ax_c.transAxes, ha="right", va="top", fontsize=7,
                  bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.8"})
    else:
        ax_c.set_title(f"loss vs compute (no scaling fit: {analysis.scaling_error})", loc="left", fontsize=7)
    _legend(fig, styles.legend_handles(extras=False))
    return fig


def overview_figure(analysis, styles: Styles) -> Figure:
    tasks = analysis.table.tasks()
    ncol = max(len(analysis.table.metrics(t)) for t in tasks)
    fig = Figure(figsize=(2.5 * ncol + 0.6, 2.1 * len(tasks) + 0.8), layout="constrained")
    axes = fig.subplots(len(tasks), ncol, squeeze=False)
    for r, task in enumerate(tasks):
        metrics = analysis.table.metrics(task)
        for c in range(ncol):
            ax = axes[r, c]
            if c >= len(metrics):
                ax.set_axis_off()
                continue
            draw_metric(ax, analysis.metrics[(task, metrics[c])], styles, compact=True, errorbars=False)
            if c == 0:
                ax.set_ylabel(task, fontsize=9, fontweight="bold")
            if r == len(tasks) - 1 or c >= len(analysis.table.metrics(tasks[r + 1])):
                ax.set_xlabel("loss → lower")
    fig.suptitle(f"every task against {analysis.table.x_label}", fontsize=10)
    _legend(fig, styles.legend_handles())
    return fig


_ANALYSIS = None  # the analysis being drawn, read by forked workers (see losslens.analyze.parallel)


def _task_figures(job) -> dict[str, list[Path]]:
    """The task and contrast figures of one task (in a worker process when there are several)."""
    task, out_dir = job
    styles = analysis_styles(_ANALYSIS)
    with rc_context(STYLE):
        return {f"{kind}_{slug(task)}": _save_figure(draw(_ANALYSIS, task, styles), out_dir / f"{kind}_{slug(task)}")
                for kind, draw in (("task", task_figure), ("contrast", contrast_figure))}


def write_plots(analysis, out_dir: str | Path) -> dict[str, list[Path]]:
    """Render every figure into ``out_dir``; returns {figure name: [png, pdf]}. The figures of
    different tasks are independent: with several tasks they are drawn in parallel processes."""
    global _ANALYSIS
    out_dir = Path(out_dir)
    tasks = analysis.table.tasks()
    _ANALYSIS = analysis
    try:
        written = {}
        for figures in fork_map(_task_figures, [(task, out_dir) for task in tasks], max_workers() if len(tasks) > 1 else 1):
            written.update(figures)
    finally:
        _ANALYSIS = None
    styles = analysis_styles(analysis)
    with rc_context(STYLE):
        written["training"] = _save_figure(training_figure(analysis, styles), out_dir / "training")
        if tasks:
            written["overview"] = _save_figure(overview_figure(analysis, styles), out_dir / "overview")
    return written


def backtest_figure(backtest: dict, base: Path) -> list[Path]:
    """Predicted against actual for a backtest: task metrics (two-stage and direct, with their
    intervals) and the held-out validation loss; points on the diagonal were predicted exactly."""
    with rc_context(STYLE):
        fig = Figure(figsize=(7.2, 3.4), layout="constrained")
        ax_m, ax_l = fig.subplots(1, 2)
        _backtest_metrics(ax_m, backtest)
        _backtest_loss(ax_l, backtest)
        for ax in (ax_m, ax_l):
            lo, hi = min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1])
            ax.plot([lo, hi], [lo, hi], color="0.4", ls="--", lw=0.8, zorder=0)
            ax.set_xlabel("actual (held-out runs)")
            if ax.has_data():
                ax.legend(frameon=False, loc="upper left")
        ax_m.set_ylabel("predicted")
        fig.suptitle(f"backtest: {', '.join(backtest['held_out']['runs'])} held out, predicted from the other runs",
                     fontsize=9)
        return _save_figure(fig, base)


def _backtest_metrics(ax, backtest: dict) -> None:
    for way, colour, marker, fill, label in (("two_stage", OKABE_ITO[0], "o", OKABE_ITO[0], "two-stage (via loss)"),
                                             ("direct", OKABE_ITO[1], "s", "none", "direct (via compute)")):
        rows = [r for r in backtest["metrics"] if r[way].get("predicted") is not None]
        if not rows:
            continue
        actual = np.array([r["actual"] for r in rows])
        pred = np.array([r[way]["predicted"] for r in rows])
        ci = np.array([[np.nan if v is None else v for v in r[way]["ci"]] for r in rows], float)
        yerr = np.nan_to_num(np.abs(np.vstack([pred - ci[:, 0], ci[:, 1] - pred])))
        ax.errorbar(actual, pred, yerr=yerr, color=colour, marker=marker, mfc=fill, ms=4, ls="none",
                    elinewidth=0.6, capsize=1.5, label=label, alpha=0.9)
    ax.set_title(f"task metrics, final checkpoint ({backtest['ci_level']:.0%} intervals)", loc="left")


def _backtest_loss(ax, backtest: dict) -> None:
    rows = [r for r in (backtest.get("loss") or {"rows": []})["rows"] if r["predicted"] is not None]
    for decayed, colour, label in ((False, "0.6", "earlier checkpoints"), (True, OKABE_ITO[2], "final checkpoints")):
        sel = [r for r in rows if r["decayed"] == decayed]
        if sel:
            pred = np.array([r["predicted"] for r in sel])
            ci = np.array([[np.nan if v is None else v for v in r["ci"]] for r in sel], float)
            yerr = np.nan_to_num(np.abs(np.vstack([pred - ci[:, 0], ci[:, 1] - pred])))
            ax.errorbar([r["actual"] for r in sel], pred, yerr=yerr, fmt="o", ms=3.5, color=colour, mec="white",
                        mew=0.4, elinewidth=0.6, capsize=1.5, label=label)
    ax.set_title(backtest.get("x_label", "validation loss"), loc="left")
