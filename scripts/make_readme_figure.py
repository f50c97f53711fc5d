"""Regenerate the README's performance-vs-loss figure from a finished demo run.

    losslens run configs/demo.yaml --out checkpoints/demo
    .venv/bin/python scripts/make_readme_figure.py checkpoints/demo   # -> docs/demo_loss_vs_performance.png

It re-runs the analysis on ``RUN_DIR/results.csv`` (same seed and bootstrap as the report) and
draws one row of panels with the analyze stage's own plotting function, so the figure shows
exactly what ``report.md`` says: per panel the verdict, the preferred fit, chance and η.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from matplotlib import rc_context
from matplotlib.figure import Figure

from losslens.analyze.analysis import run_analysis
from losslens.analyze.plots import STYLE, Styles, draw_metric

ROOT = Path(__file__).resolve().parent.parent
# (task, metric, panel title): the emergent ability, its continuous view, the mirage pair, a smooth task,
# and proofreading with its continuous views.
PANELS = [
    ("copy", "exact_match", "copy: exact match"),
    ("copy", "token_prob", "copy: p(reference token)"),
    ("addition", "exact_match", "addition: exact match"),
    ("addition", "token_prob", "addition: p(reference token)"),
    ("next_word", "acc", "next word: accuracy"),
    ("proofread", "exact_match", "proofread: exact match"),
    ("proofread", "token_prob", "proofread: p(reference token)"),
    ("proofread", "edit_distance", "proofread: edit distance"),
]
COLUMNS = 4


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="a finished demo study (holds results.csv)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "demo_loss_vs_performance.png")
    p.add_argument("--bootstrap", type=int, default=1000)
    args = p.parse_args()

    analysis = run_analysis(args.run_dir / "results.csv", args.run_dir, overrides={"bootstrap": args.bootstrap},
                            progress=False)
    styles = Styles(analysis.table)
    with rc_context(STYLE):
        rows = -(-len(PANELS) // COLUMNS)
        fig = Figure(figsize=(2.6 * COLUMNS, 2.7 * rows + 0.3), layout="constrained")
        for ax, (task, metric, title) in zip(fig.subplots(rows, COLUMNS).flat, PANELS):
            draw_metric(ax, analysis.metrics[(task, metric)], styles, compact=True)
            ax.set_title(f"{title}\n{analysis.metrics[(task, metric)].threshold.verdict}", loc="left")
            ax.set_xlabel("pretraining loss → lower")
        fig.suptitle("losslens demo: task performance against pretraining loss (3 sizes x 2 budgets, CPU)",
                     fontsize=9.5)
        fig.legend(handles=styles.legend_handles(), loc="outside lower center", ncol=8, frameon=False)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=150)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
