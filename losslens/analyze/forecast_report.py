"""report.md sections of :mod:`losslens.analyze.forecast`: which intermediate each task's forecast went
through and why (the inner backtest), how each way did on the held-out runs, and the noise floor."""

from __future__ import annotations

from losslens.analyze.markdown import number_cell


def _way_label(way: str) -> str:
    return {"loss": "pretraining loss", "direct": "direct (compute)"}.get(way, f"task loss {way}")


def noise_settings(fc: dict) -> str:
    """One sentence stating how curves treat noise (the report says what was done to the data)."""
    smooth = (f"smoothed by a centred moving average over {fc['smooth_window']} checkpoints (the window shrinking "
              f"at a run's ends, so a final checkpoint stays as measured)") if fc["smooth_window"] > 1 else "not smoothed"
    return (f"Curves skip each run's checkpoints before {fc['skip_fraction']:.0%} of its tokens and are {smooth}; "
            f"laws are fitted to each run's final checkpoint as measured.")


def render_intermediates(bt: dict) -> list[str]:
    """The backtest's intermediates subsection: per-way errors, the inner choice, noise flags."""
    fc = bt.get("forecast")
    if not fc or not bt["metrics"]:
        return []
    L = ["### Intermediates: which way each forecast went", "",
         f"Setting `analyze.forecast.intermediate: {fc['intermediate']}`. Ways: pretraining loss ((N, D) → loss → "
         f"metric), a task loss ((N, D) → the task's own loss-like metric by its own law → metric) and direct "
         f"(metric against compute). " + noise_settings(fc), ""]
    if fc["intermediate"] == "auto":
        L += [(f"Chosen per task x metric by an inner backtest on the training runs only: fitted on "
               f"{', '.join(fc['inner_train'])}, scored (mean absolute error) on {', '.join(fc['inner_held_out'])}; "
               f"the first way (loss, task losses, direct) within the metric's noise floor of the smallest "
               f"inner error is chosen. The held-out runs above played no part in the choice.") if fc["inner_held_out"]
              else f"No inner backtest: {fc['inner_note']}; every forecast goes through the pretraining loss.", ""]
    L += ["| metric | way | MAE on the held-out runs | inside the interval |", "|---|---|---|---|"]
    for metric, blk in fc["by_metric"].items():
        for way, s in [*blk["ways"].items(), ("chosen", blk["chosen"])]:
            name = f"**chosen** ({', '.join(f'{w} {k}' for w, k in blk['choices'].items())})" if way == "chosen" \
                else _way_label(way)
            L.append(f"| {metric} | {name} | {number_cell(s['mae'], '.4g')} | {s['inside']}/{s['n_with_interval']} |")
    return L + [""] + _choice_table(bt["metrics"]) + [""]


def _choice_table(rows: list[dict]) -> list[str]:
    ways = list(dict.fromkeys(w for r in rows for w in r["ways"]))
    L = [f"| task | metric | run | inner MAE: {' / '.join(ways)} | chosen | predicted | actual | abs. err. "
         f"| noise SD | within noise |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        inner = r["intermediate"]["inner_mae"] or {}
        f = r["forecast"]
        within = "–" if f["within_noise"] is None else "yes" if f["within_noise"] else "no"
        L.append(f"| {r['task']} | {r['metric']} | {r['run']} | {' / '.join(number_cell(inner.get(w), '.3g') for w in ways)} "
                 f"| {f['way']}{' (' + r['intermediate']['note'] + ')' if r['intermediate']['note'] else ''} "
                 f"| {number_cell(f.get('predicted'))} | {r['actual']:.3f} | {number_cell(f.get('abs_error'))} "
                 f"| {number_cell(r['noise']['sd'], '.3g')} | {within} |")
    return L + ["", "'within noise': the error is no larger than the checkpoint-to-checkpoint noise of the training "
                    "runs (below), so the forecast cannot be told apart from a perfect one."]


def render_noise(noise: list[dict], fc: dict) -> list[str]:
    """Per task x metric: the noise floor and signal-to-noise (Heineman et al. 2025)."""
    if not noise:
        return []
    last = noise[0]["last"]
    L = ["", "## Noise", "",
         f"Noise floor: the standard deviation of each run's last {last} checkpoints about a straight line through "
         f"them, pooled over runs. Signal: the range of the runs' final values. Signal-to-noise: their ratio; below "
         f"about 1, the benchmark cannot rank these runs. {noise_settings(fc)}", "",
         "| task | metric | noise SD | signal | signal-to-noise | runs |", "|---|---|---|---|---|---|"]
    for n in noise:
        L.append(f"| {n['task']} | {n['metric']} | {number_cell(n['sd'], '.3g')} | {number_cell(n['signal'], '.3g')} "
                 f"| {number_cell(n['snr'], '.3g')} | {n['runs']} |")
    return L
