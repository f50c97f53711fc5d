"""The task folders of docs/lm-eval.md's recipes, as written there, on a few made-up documents."""

from __future__ import annotations

import re
from pathlib import Path

from tests.eval_fixtures import write_jsonl

DOC = Path(__file__).resolve().parents[1] / "docs" / "lm-eval.md"


def _recipe_data(root: Path) -> None:
    """A few documents in the layouts docs/lm-eval.md expects, under ``root`` (for ``/data``)."""
    for subject in ("anatomy", "astronomy"):
        rows = [{"question": f"Question {i} on {subject}?", "choices": ["one", "two", "three", "four"], "answer": i % 4}
                for i in range(6)]
        write_jsonl(root / "mmlu" / "test" / f"{subject}.jsonl", rows)
        write_jsonl(root / "mmlu" / "dev" / f"{subject}.jsonl", rows[:5])
    sums = [{"question": f"Tom has {i} apples and buys 2. How many now?", "answer": f"{i} + 2 = {i + 2}.\n#### {i + 2}"}
            for i in range(8)]
    write_jsonl(root / "gsm8k" / "train.jsonl", sums)
    write_jsonl(root / "gsm8k" / "test.jsonl", sums[:3])
    ends = ["puts the tray in the oven.", "[title] eats the tray.", "sings.", "drives away."]
    stories = [{"activity_label": "Baking", "ctx_a": "A woman puts dough on a tray.", "ctx_b": "she", "endings": ends,
                "label": i % 4} for i in range(6)]
    write_jsonl(root / "hellaswag" / "hellaswag_train.jsonl", stories)
    write_jsonl(root / "hellaswag" / "hellaswag_val.jsonl", [dict(s, label=str(s["label"])) for s in stories])


def write_recipes(root: Path) -> Path:
    """Data under ``root/data`` and the recipes' task files under ``root/tasks/harness`` (returned)."""
    data = root / "data"
    _recipe_data(data)
    for body in re.findall(r"```(?:yaml|python)\n# file: (.*?)```", DOC.read_text(), re.S):
        name, text = body.split("\n", 1)
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("/data/", f"{data}/"))
    script = root / "tasks/harness/mmlu_local/make_tasks.py"
    exec(compile(script.read_text(), str(script), "exec"), {"__file__": str(script), "__name__": "__main__"})
    return root / "tasks/harness"
