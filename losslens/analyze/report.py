"""``report.json`` (everything, machine-readable) and ``report.md`` (a readable summary)."""

from __future__ import annotations

import math
from pathlib import Path

from losslens.analyze.table import count_label
from losslens.analyze.threshold import BIC_MARGIN, FLAT_FRACTION
from losslens.fsio import atomic_write_json, atomic_write_text, jsonable

REPORT_JSON, REPORT_MD, PLOTS_DIR = "report.json", "report.md", "plots"


def build_report(analysis, plots: dict[str, list[Path]], out: Path) -> dict:
    t = analysis.table
    metrics = []
    for (task, metric), a in analysis.metrics.items():
        s = a.series
        metrics.append({
            "task": task, "metric": metric, "kind": "discontinuous" if s.discontinuous else "continuous",
            **a.threshold.to_dict(), "alignment": a.alignment, "extrapolation": a.extrapolation,
        })
    return jsonable({
        "study": {
            "results": analysis.settings["results"], "n_rows": len(t), "runs": [
                {"run": r, "n_params": t.run_size(r), "n_params_nonembed": t.run_nonembed(r),
                 "size": t.size_label(t.run_size(r)), "budget_tokens": t.run_budget(r)} for r in t.runs()],
            "sizes": t.sizes(), "budgets": t.budgets(), "n_checkpoints": len(t.checkpoints()["run"]),
            "tasks": t.tasks(),
        },
        "settings": analysis.settings,
        "method": {
            "selection": f"BIC = n ln(RSS/n) + k ln n among constant-at-chance/flat/linear/sigmoid/hinge; claims need ΔBIC >= "
                         f"{BIC_MARGIN:g}",
            "threshold": "hinge kink, or the loss where a preferred sigmoid has risen "
                         f"{FLAT_FRACTION:.0%} of its height; percentile bootstrap interval",
            "plateau": "the chance column where given; otherwise a plateau fitted from the data",
            "alignment": "leave-one-size-out R^2 of a local-linear smoother, against loss and log10 compute",
            "extrapolation": "line fitted to points with loss >= the task's reference eta, error below it",
        },
        "metrics": metrics,
        "mirage": list(analysis.mirage.values()),
        "reference_eta": {task: None if v is None else {"metric": v[0], "eta": v[1]}
                          for task, v in analysis.reference_eta.items()},
        "scaling": analysis.scaling.to_dict() if analysis.scaling is not None else {"error": analysis.scaling_error},
        "forecasts": analysis.forecasts,
        "plots": {name: [str(p.relative_to(out)) for p in paths] for name, paths in plots.items()},
    })


def _num(v, fmt=".3f") -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _count(v) -> str:
    return "–" if v is None else "never" if not math.isfinite(v) else count_label(v)


def render_markdown(report: dict) -> str:
    st = report["study"]
    L = [f"# losslens analysis", "",
         f"Table `{st['results']}`: {st['n_rows']} rows, {len(st['runs'])} runs "
         f"({len(st['sizes'])} sizes x {len(st['budgets'])} budgets), {st['n_checkpoints']} checkpoints, "
         f"{len(st['tasks'])} tasks. Bootstrap: {report['settings']['n_bootstrap']} resamples "
         f"(scaling law: {report['settings']['scaling_bootstrap']}), seed {report['settings']['seed']}.", "",
         "## Verdicts", "",
         "Per task x metric: the verdict, the loss threshold η with its 95% bootstrap interval (only where "
         "the data point to an emergent shape), the model preferred by BIC and its margin over the best model "
         "standing for another verdict, how well one curve fits all model sizes (leave-one-size-out R²) "
         "against loss and against compute, and the extrapolation error from points above the task's η "
         "(relative to the jump it had to predict).", "",
         "| task | metric | kind | verdict | η | 95% CI | preferred | ΔBIC | R² loss | R² compute | extrap. error |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in report["metrics"]:
        th = m["threshold"]
        ci = "–" if th["ci_low"] is None else f"[{th['ci_low']:.3f}, {th['ci_high']:.3f}]"
        ex = m["extrapolation"]
        L.append(f"| {m['task']} | {m['metric']} | {m['kind'][:4]}. | **{m['verdict']}** | {_num(th['loss'])} | {ci} "
                 f"| {m['preferred_model'] or '–'} | {_num(m['delta_bic'], '.1f')} "
                 f"| {_num(m['alignment']['loss']['r2'], '.2f')} | {_num(m['alignment']['compute']['r2'], '.2f')} "
                 f"| {'–' if ex is None else _num(ex['rel_error'], '.2f')} |")
    L += ["", "Reasons:", ""]
    L += [f"- {m['task']} / {m['metric']}: {m['reason']}"
          + ("" if not m["plateau_fitted"] or m["verdict"] != "emergent"
             else " (no chance level given: the plateau was fitted from the data)") for m in report["metrics"]]

    L += ["", "## Mirage check", "",
          "Discontinuous and continuous metrics of each task side by side (Schaeffer et al. 2023). "
          "`mirage`: a discontinuous metric jumps while a continuous one improves smoothly.", "",
          "| task | discontinuous | continuous | flag | note |", "|---|---|---|---|---|"]
    for mg in report["mirage"]:
        side = lambda d: ", ".join(f"{k}: {v}" for k, v in d.items()) or "–"  # noqa: E731
        L.append(f"| {mg['task']} | {side(mg['discontinuous'])} | {side(mg['continuous'])} | "
                 f"{'**' + mg['flag'] + '**' if mg['flag'] else '–'} | {mg['note']} |")

    L += ["", "## Scaling law", ""]
    sc = report["scaling"]
    if "error" in sc:
        L.append(f"No fit: {sc['error']}")
    else:
        L += [f"L(N, D) = E + A / N^α + B / D^β fitted to {sc['n_points']} checkpoints (Huber loss on log-loss, "
              f"N non-embedding parameters, D tokens):", "",
              "| parameter | estimate | 95% CI |", "|---|---|---|"]
        for p, sym in (("E", "E"), ("A", "A"), ("B", "B"), ("alpha", "α"), ("beta", "β")):
            ci = sc["intervals"].get(p)
            L.append(f"| {sym} | {sc[p]:.4g} | {'–' if not ci else f'[{ci[0]:.4g}, {ci[1]:.4g}]'} |")

    L += ["", "## Forecasts", ""]
    if not report["forecasts"]:
        L.append("No forecast: it needs an emergent task x metric and a scaling fit.")
    for fc in report["forecasts"]:
        ci = fc["eta_ci"]
        L += [f"**{fc['task']} / {fc['metric']}** (η = {fc['eta']:.3f}, CI [{_num(ci[0])}, {_num(ci[1])}]): "
              f"tokens and compute at which each size's loss falls below η ('never': η is below what the size "
              f"can reach).", "",
              "| size (non-embed.) | trained | tokens | 95% CI | FLOPs | 95% CI |", "|---|---|---|---|---|---|"]
        for r in fc["sizes"]:
            flops = lambda v: "–" if v is None else f"{v:.2e}"  # noqa: E731
            L.append(f"| {count_label(r['n_params_nonembed'])} | {'yes' if r['trained'] else 'no'} "
                     f"| {_count(r['tokens']) if r['reachable'] else 'never'} "
                     f"| [{_count(r['tokens_ci'][0])}, {_count(r['tokens_ci'][1]) if r['tokens_ci'][1] else 'never'}] "
                     f"| {flops(r['flops']) if r['reachable'] else 'never'} "
                     f"| [{flops(r['flops_ci'][0])}, {flops(r['flops_ci'][1]) if r['flops_ci'][1] else 'never'}] |")
        L.append("")

    if report["plots"]:
        L += ["", "## Plots", ""]
        for name, paths in report["plots"].items():
            png = next(p for p in paths if p.endswith(".png"))
            L += [f"### {name.replace('_', ' ', 1)}", "", f"![{name}]({png})", ""]
    L += ["", "## Method", "",
          f"- Models: constant at chance, a flat level, and (improving only) linear, sigmoid and hinge in loss, "
          f"chosen by BIC = n ln(RSS/n) + k ln n; a claim "
          f"(learned, emergent vs smooth) needs ΔBIC ≥ {BIC_MARGIN:g}.",
          "- Chance comes from the table; a metric without one gets a plateau fitted from the data.",
          "- Lower-is-better metrics are negated for fitting and reported in their own units.",
          "- η intervals: percentile bootstrap over checkpoints (and test examples where per-example "
          "records exist). `insufficient-data` when fewer than 3 points lie on a side of η or the interval is "
          "wider than half the loss range or reaches its edge.",
          "- Forecast intervals pair scaling-law and η bootstrap replicates."]
    return "\n".join(L) + "\n"


def write_report(analysis, out: str | Path, plots: bool = True) -> dict:
    """Write plots/, report.json and report.md under ``out``; returns the report dict."""
    out = Path(out)
    written = {}
    if plots:
        from losslens.analyze.plots import write_plots  # matplotlib only when plotting

        written = write_plots(analysis, out / PLOTS_DIR)
    report = build_report(analysis, written, out)
    atomic_write_json(out / REPORT_JSON, report)
    atomic_write_text(out / REPORT_MD, render_markdown(report))
    return report
