"""``report.json`` (everything, machine-readable) and ``report.md`` (a readable summary)."""

from __future__ import annotations

import math
from pathlib import Path

from losslens.analyze.forecast_report import render_intermediates, render_noise
from losslens.analyze.curves import BIC_MARGIN, FLAT_FRACTION
from losslens.analyze.markdown import number_cell
from losslens.counts import count_label
from losslens.fsio import atomic_write_json, atomic_write_text, files_together, jsonable

REPORT_JSON, REPORT_MD, PLOTS_DIR = "report.json", "report.md", "plots"


def build_report(analysis, plots: dict[str, list[Path]], out: Path) -> dict:
    t = analysis.table
    metrics = []
    for (task, metric), a in analysis.metrics.items():
        s = a.series
        metrics.append({
            "task": task, "metric": metric, "kind": "discontinuous" if s.discontinuous else "continuous",
            **a.threshold.to_dict(), "alignment": a.alignment, "extrapolation": a.extrapolation,
            **({"seeds": a.seeds} if t.has_seeds() else {}),
        })
    seeds = {"seeds": t.seeds(), "seeds_per_size": {t.size_label(n): k for n, k in t.seeds_per_size().items()}}
    return jsonable({
        "study": {
            "results": analysis.settings["results"], "n_rows": len(t), "runs": [
                {"run": r, "n_params": t.run_size(r), "n_params_nonembed": t.run_nonembed(r),
                 "size": t.size_label(t.run_size(r)), "budget_tokens": t.run_budget(r),
                 **({"seed": t.run_seed(r)} if t.has_seeds() else {})} for r in t.runs()],
            "sizes": t.sizes(), "budgets": t.budgets(), "n_checkpoints": len(t.checkpoints()["run"]),
            "tasks": t.tasks(), "x_label": t.x_label, **(seeds if t.has_seeds() else {}),
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
        "scaling_alternative": analysis.scaling_alternative,
        "forecasts": analysis.forecasts,
        "backtest": analysis.backtest if analysis.backtest is not None else {"skipped": analysis.backtest_note},
        "noise": analysis.noise,
        "plots": {name: [str(p.relative_to(out)) for p in paths] for name, paths in plots.items()},
    })


def _count(v) -> str:
    return "–" if v is None else "never" if not math.isfinite(v) else count_label(v)


def _level(report: dict) -> str:
    return f"{report['settings'].get('ci_level', 0.95):.0%}"


def render_markdown(report: dict) -> str:
    L = _md_verdicts(report) + _md_seeds(report) + _md_mirage(report) + _md_scaling(report) + _md_forecasts(report)
    L += render_backtest(report)
    L += render_noise(report.get("noise", []), report["settings"]["forecast"]) if "forecast" in report["settings"] else []
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
          "- η intervals: percentile bootstrap over "
          + ("seeds within each size, then " if "seeds_per_size" in report["study"] else "")
          + "checkpoints (and test examples where per-example "
          f"records exist). `insufficient-data` when fewer than {report['settings'].get('min_side', 3)} points lie "
          "on a side of η or the interval is wider than half the loss range or reaches its edge.",
          "- Forecast intervals pair scaling-law and η bootstrap replicates; where a scaling-law parameter is "
          "not identified they are widened to every parameter set its profile likelihood allows."]
    return "\n".join(L) + "\n"


def grid_summary(study: dict) -> str:
    """"4 sizes x 3 budgets" for a full grid; otherwise the runs per size and the distinct budgets (a ladder
    whose budgets are multiples of each size's own Chinchilla count has as many budgets as runs)."""
    per_size: dict[str, list[int]] = {}
    for r in study["runs"]:
        per_size.setdefault(r["size"], []).append(r["budget_tokens"])
    budgets = sorted({b for bs in per_size.values() for b in bs})
    if all(sorted(set(bs)) == budgets for bs in per_size.values()):  # seeds repeat a budget
        return f"{len(per_size)} sizes x {len(budgets)} budgets"
    counts = sorted({len(bs) for bs in per_size.values()}, reverse=True)
    runs = (f"{counts[0]} runs each" if len(counts) == 1
            else "runs per size: " + ", ".join(f"{s} {len(bs)}" for s, bs in per_size.items()))
    return (f"{len(per_size)} sizes, {runs}; {len(budgets)} distinct budgets, "
            f"{count_label(budgets[0])} to {count_label(budgets[-1])} tokens")


def _md_verdicts(report: dict) -> list[str]:
    st, lvl = report["study"], _level(report)
    axis = st.get("x_label") or "pretraining loss"
    L = ["# losslens analysis", "",
         f"Table `{st['results']}`: {st['n_rows']} rows, {len(st['runs'])} runs ({grid_summary(st)}), "
         f"{st['n_checkpoints']} checkpoints, "
         f"{len(st['tasks'])} tasks. x-axis ('loss' below): {axis}. Bootstrap: "
         f"{report['settings']['n_bootstrap']} resamples (scaling law: {report['settings']['scaling_bootstrap']}), "
         f"seed {report['settings']['seed']}.", "",
         *([f"**{report['settings']['x_warning']}**", ""] if report["settings"].get("x_warning") else []),
         "## Verdicts", "",
         f"Per task x metric: the verdict, the loss threshold η with its {lvl} bootstrap interval (only where "
         "the data point to an emergent shape), the model preferred by BIC and its margin over the best model "
         "standing for another verdict, how well one curve fits all model sizes (leave-one-size-out R²) "
         "against loss and against compute, and the extrapolation error from points above the task's η "
         "(relative to the jump it had to predict).", "",
         f"| task | metric | kind | verdict | η | {lvl} CI | preferred | ΔBIC | R² loss | R² compute | extrap. error |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in report["metrics"]:
        th = m["threshold"]
        ci = "–" if th["ci_low"] is None else f"[{th['ci_low']:.3f}, {th['ci_high']:.3f}]"
        ex = m["extrapolation"]
        L.append(f"| {m['task']} | {m['metric']} | {m['kind'][:4]}. | **{m['verdict']}** | {number_cell(th['loss'])} | {ci} "
                 f"| {m['preferred_model'] or '–'} | {number_cell(m['delta_bic'], '.1f')} "
                 f"| {number_cell(m['alignment']['loss']['r2'], '.2f')} | {number_cell(m['alignment']['compute']['r2'], '.2f')} "
                 f"| {'–' if ex is None else number_cell(ex['rel_error'], '.2f')} |")
    L += ["", "Reasons:", ""]
    L += [f"- {m['task']} / {m['metric']}: {m['reason']}"
          + ("" if not m["plateau_fitted"] or m["verdict"] != "emergent"
             else " (no chance level given: the plateau was fitted from the data)") for m in report["metrics"]]
    return L


def _md_seeds(report: dict) -> list[str]:
    """η seed by seed, the spread between seeds, and the seed level's share of η's interval (tables with seeds)."""
    st, lvl = report["study"], _level(report)
    if "seeds_per_size" not in st:
        return []
    per_size = ", ".join(f"{size}: {k}" for size, k in st["seeds_per_size"].items())
    L = ["", "## Seeds", "",
         f"Seeds per size: {per_size}. η's bootstrap resamples seeds within each size, then checkpoints (then test "
         f"examples). Per seed: η from that seed's runs alone, where they suffice (verdict `emergent`). Spread: sd "
         f"and range of those η, beside the mean width of their own intervals (within a seed). Share from seeds: 1 − (width of the {lvl} interval without the seed level) / "
         f"(width with it).", "",
         "| task | metric | η (all seeds) | per seed | sd | range | within a seed | width with seeds | without "
         "| share from seeds |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    rows = [m for m in report["metrics"] if m.get("seeds")]
    if not rows:
        return L + ["| – | – | no threshold found | | | | | | | |"]
    for m in rows:
        sd = m["seeds"]
        per = "; ".join(f"{r['seed']}: {number_cell(r['eta'])}" if r["eta"] is not None else f"{r['seed']}: {r['verdict']}"
                        for r in sd["per_seed"])
        sp, iv = sd["spread"], sd["interval"]
        rng = "–" if sp["range"] is None else f"{sp['range']:.3f} [{sp['min']:.3f}, {sp['max']:.3f}]"
        share = "–" if iv["share_from_seeds"] is None else f"{iv['share_from_seeds']:.0%}"
        L.append(f"| {m['task']} | {m['metric']} | {number_cell(m['threshold']['loss'])} | {per} | {number_cell(sp['sd'])} | {rng} "
                 f"| {number_cell(sp['within_seed_width_mean'])} | {number_cell(iv['width_with'])} | {number_cell(iv['width_without'])} | {share} |")
    return L


def _md_mirage(report: dict) -> list[str]:
    L = ["", "## Mirage check", "",
         "Discontinuous and continuous metrics of each task side by side (Schaeffer et al. 2023). "
         "`mirage`: a discontinuous metric jumps while a continuous one improves smoothly.", "",
         "| task | discontinuous | continuous | flag | note |", "|---|---|---|---|---|"]
    for mg in report["mirage"]:
        side = lambda d: ", ".join(f"{k}: {v}" for k, v in d.items()) or "–"  # noqa: E731
        L.append(f"| {mg['task']} | {side(mg['discontinuous'])} | {side(mg['continuous'])} | "
                 f"{'**' + mg['flag'] + '**' if mg['flag'] else '–'} | {mg['note']} |")
    return L


_SYMBOLS = (("E", "E"), ("A", "A"), ("B", "B"), ("alpha", "α"), ("beta", "β"))


def scaling_table(sc: dict, level: str) -> list[str]:
    """Estimates with their intervals; "not identified" (with why, and the profile range) where
    the data do not pin a parameter down."""
    L = [f"| parameter | estimate | {level} CI | note |", "|---|---|---|---|"]
    for p, sym in _SYMBOLS:
        if p in sc["not_identified"]:
            prof = sc["profile_intervals"].get(p)
            rng = f"profile [{prof[0]:.3g}, {prof[1]:.3g}]" if prof else "–"
            L.append(f"| {sym} | **not identified** | {rng} | {sc['not_identified'][p]} |")
        else:
            ci = sc["intervals"].get(p)
            L.append(f"| {sym} | {sc[p]:.4g} | {'–' if not ci else f'[{ci[0]:.4g}, {ci[1]:.4g}]'} | |")
    return L


def _md_scaling(report: dict) -> list[str]:
    L = ["", "## Scaling law", ""]
    sc, st = report["scaling"], report["settings"]
    if "error" in sc:
        return L + [f"No fit: {sc['error']}"]
    points = ("each run's final, fully decayed checkpoint" if st.get("scaling_points") == "decayed"
              else "every checkpoint, stable-phase ones included")
    L += [f"{sc['form']}, fitted to {sc['n_points']} points ({points}; Huber loss on log-loss); L is the x-axis, "
          f"{st.get('x_label') or 'pretraining loss'}. "
          + (st.get("scaling_note") or ""), ""]
    L += scaling_table(sc, _level(report))
    alt = report.get("scaling_alternative")
    if alt:
        fmt = lambda d, p: "not identified" if p in d["not_identified"] else f"{d[p]:.4g}"  # noqa: E731
        L += ["", f"The same law fitted to {'all' if alt['points'] == 'all' else 'only the decayed'} checkpoints "
                  f"({alt['n_points']} points) instead: "
              + ", ".join(f"{sym} = {fmt(alt, p)}" for p, sym in _SYMBOLS)
              + ". Stable-phase checkpoints sit above the decayed law: the difference is how much they move it."]
    return L


def _nothing_identified(scaling: dict) -> bool:
    """Every parameter of the scaling law not identified: it says nothing about sizes it was not fitted on."""
    return "error" not in scaling and all(p in scaling.get("not_identified", {}) for p, _ in _SYMBOLS)


def _md_forecasts(report: dict) -> list[str]:
    L, lvl = ["", "## Forecasts", ""], _level(report)
    if not report["forecasts"]:
        L.append("No forecast: it needs an emergent task x metric and a scaling fit.")
    withhold = _nothing_identified(report["scaling"])
    if withhold and report["forecasts"]:
        L += ["No scaling-law parameter is identified (see above): the law only interpolates between the trained "
              "runs, so the sizes it was not trained on get no forecast here (report.json keeps the numbers, with "
              "their profile-region intervals). Train more sizes or budgets to pin it down.", ""]
    for fc in report["forecasts"]:
        ci = fc["eta_ci"]
        how = fc["sizes"][0].get("interval", "") if fc["sizes"] else ""
        L += [f"**{fc['task']} / {fc['metric']}** (η = {fc['eta']:.3f}, CI [{number_cell(ci[0])}, {number_cell(ci[1])}]): "
              f"tokens and compute at which each size's loss falls below η ('never': η is below what the size "
              f"can reach). Interval: {how}.", "",
              f"| size (non-embed.) | trained | tokens | {lvl} CI | FLOPs | {lvl} CI |", "|---|---|---|---|---|---|"]
        flops = lambda v: "–" if v is None else f"{v:.2e}"  # noqa: E731
        for r in fc["sizes"]:
            if withhold and not r["trained"]:
                continue
            if r["reachable"] is None:
                L.append(f"| {count_label(r['n_params_nonembed'])} | {'yes' if r['trained'] else 'no'} "
                         f"| not identified | – | – | – |")
                continue
            L.append(f"| {count_label(r['n_params_nonembed'])} | {'yes' if r['trained'] else 'no'} "
                     f"| {_count(r['tokens']) if r['reachable'] else 'never'} "
                     f"| [{_count(r['tokens_ci'][0])}, {_count(r['tokens_ci'][1]) if r['tokens_ci'][1] else 'never'}] "
                     f"| {flops(r['flops']) if r['reachable'] else 'never'} "
                     f"| [{flops(r['flops_ci'][0])}, {flops(r['flops_ci'][1]) if r['flops_ci'][1] else 'never'}] |")
        L.append("")
    return L


def _ci(ci, fmt=".3g") -> str:
    return "–" if not ci or ci[0] is None else f"[{number_cell(ci[0], fmt)}, {number_cell(ci[1], fmt)}]"


def _yes(v) -> str:
    return "–" if v is None else "yes" if v else "**no**"


def render_backtest(report: dict) -> list[str]:
    """The backtest section: what was held out, loss, metrics (OLMo-ladder-like table), crossings."""
    bt, lvl = report["backtest"], _level(report)
    L = ["", "## Backtest", ""]
    if "skipped" in bt:
        return L + [f"No backtest: {bt['skipped']}."]
    ho, sc = bt["held_out"], bt["scaling"]
    L += [f"Held out ({ho['spec']}): {', '.join(ho['runs'])} (size {', '.join(ho['sizes'])}). Everything below "
          f"was refitted on the other runs ({', '.join(bt['train_runs'])}) and compared with what the held-out "
          f"runs measured. Intervals: {lvl} bootstrap prediction intervals ({bt['curve_bootstrap']} curve "
          f"replicates); 'inside': the measurement fell in it.", ""]
    if "error" in sc:
        L += [f"Scaling law on the training runs: no fit ({sc['error']}); no two-stage prediction.", ""]
    else:
        L += [f"Scaling law on the training runs: {sc['form']}, {sc['n_points']} points. {sc.get('note', '')}", ""]
        L += scaling_table(sc, lvl) + [""]
    L += _md_backtest_loss(bt) + _md_backtest_metrics(bt, lvl) + render_intermediates(bt) + _md_backtest_crossings(bt, lvl)
    return L


def _md_backtest_loss(bt: dict) -> list[str]:
    ls = bt["loss"]
    if ls is None:
        return []
    pct = lambda v: "–" if v is None else f"{v:.1%}"  # noqa: E731
    L = [f"### The x-axis: {bt.get('x_label', 'validation loss')}", "",
         f"Mean relative error at the held-out runs' final (decayed) checkpoints: {pct(ls['decayed']['mean_rel_error'])} "
         f"(inside the interval: {ls['decayed']['inside']}/{ls['decayed']['n_with_interval']}); at all "
         f"{ls['all']['n']} checkpoints: {pct(ls['all']['mean_rel_error'])} "
         f"({ls['all']['inside']}/{ls['all']['n_with_interval']} inside)."
         + (" A law of decayed points is expected to fall below stable-phase checkpoints."
            if bt["scaling_points"] == "decayed" and not bt["scaling"].get("note") else ""), "",
         "| run | tokens | actual | predicted | interval | rel. error | inside |", "|---|---|---|---|---|---|---|"]
    for r in ls["rows"]:
        if r["decayed"]:
            L.append(f"| {r['run']} | {count_label(r['tokens'])} | {r['actual']:.4f} | {number_cell(r['predicted'], '.4f')} "
                     f"| {_ci(r['ci'], '.4f')} | {pct(r['rel_error'])} | {_yes(r['inside'])} |")
    return L + [""]


def error_and_inside(summary: dict) -> str:
    """'0.0123 (29/32 inside)': the mean absolute error of one way of predicting one metric, and its coverage."""
    mae = "–" if summary["mae"] is None else f"{summary['mae']:.3g}"
    return f"{mae} ({summary['inside']}/{summary['n_with_interval']} inside)"


def _md_backtest_metrics(bt: dict, lvl: str) -> list[str]:
    sm = bt["summary"]
    by_metric = sm.get("by_metric") or {"all metrics": sm}
    L = ["### Task metrics at the final checkpoint", "",
         f"Two-stage: (N, D) → loss by the law, loss → metric by the curve preferred by BIC on the training runs. "
         f"Direct: the same family of curves against log10 compute. Two-stage closer {sm['two_stage_closer']} "
         f"times, direct {sm['direct_closer']}. Mean absolute error per metric, each in its own units:", "",
         "| metric | predictions | two-stage MAE | direct MAE |", "|---|---|---|---|",
         *[f"| {m} | {d['two_stage']['n']} | {error_and_inside(d['two_stage'])} | {error_and_inside(d['direct'])} |"
           for m, d in by_metric.items()], "",
         f"| task | metric | run | actual | two-stage | {lvl} CI | abs. err. | rel. err. | inside "
         f"| direct | {lvl} CI | abs. err. | rel. err. | inside | closer |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in bt["metrics"]:
        cells = []
        for way in ("two_stage", "direct"):
            w = r[way]
            if w.get("predicted") is None:
                cells.append(f"{w.get('note', '–')} | – | – | – | –")
                continue
            cells.append(f"{w['predicted']:.3f} | {_ci(w['ci'])} | {w['abs_error']:.3f} | {number_cell(w['rel_error'], '.1%')} "
                         f"| {_yes(w['inside'])}")
        L.append(f"| {r['task']} | {r['metric']} | {r['run']} | {r['actual']:.3f} | {cells[0]} | {cells[1]} "
                 f"| {r['closer'] or '–'} |")
    return L + [""]


def _md_backtest_crossings(bt: dict, lvl: str) -> list[str]:
    if not bt["crossings"]:
        return ["No emergent task x metric: no threshold crossing to predict."]
    L = ["### When the held-out runs cross η", "",
         "η and the law refitted on the training runs; actual: where the held-out run's measured loss first falls "
         "below η (log-linear between checkpoints).", "",
         f"| task | metric | run | η | predicted tokens | {lvl} CI | actual tokens | predicted/actual | inside | note |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for r in bt["crossings"]:
        if "eta" not in r:
            L.append(f"| {r['task']} | {r['metric']} | {r['run']} | – | – | – | – | – | – | {r['note']} |")
            continue
        tok = lambda v: "–" if v is None else _count(v)  # noqa: E731
        L.append(f"| {r['task']} | {r['metric']} | {r['run']} | {r['eta']:.3f} | {tok(r['predicted_tokens'])} "
                 f"| [{tok(r['tokens_ci'][0])}, {tok(r['tokens_ci'][1])}] | {tok(r['actual_tokens'])} "
                 f"| {number_cell(r['ratio'], '.2f')} | {_yes(r['inside'])} | {r['note']} |")
    return L


def write_report(analysis, out: str | Path, plots: bool = True) -> dict:
    """Write plots/, report.json and report.md under ``out``; returns the report dict.

    The three are replaced as one unit (:func:`losslens.fsio.files_together`): an analyze that fails or
    is interrupted leaves the previous report, with its own plots, as it was.
    """
    out = Path(out)
    written = {}
    with files_together(out, (PLOTS_DIR, REPORT_JSON, REPORT_MD)) as new:
        if plots:
            from losslens.analyze.plots import backtest_figure, write_plots  # matplotlib only when plotting

            written = write_plots(analysis, new / PLOTS_DIR)
            if analysis.backtest is not None:
                written["backtest"] = backtest_figure(analysis.backtest, new / PLOTS_DIR / "backtest")
        report = build_report(analysis, written, new)
        atomic_write_json(new / REPORT_JSON, report)
        atomic_write_text(new / REPORT_MD, render_markdown(report))
    return report
