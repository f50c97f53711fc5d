"""Agreement with lm-evaluation-harness on one checkpoint and one local multiple-choice task.

Runs when the ``lm-eval`` extra is installed (``pip install losslens[lm-eval]``; CI installs it).
Both tools tokenize ``context`` and ``context + choice`` and score the tokens after the context,
moving trailing context whitespace into the choice; both score in float32 here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from losslens.evaluate.harness import harness_task_yaml
from losslens.evaluate.runner import TaskSettings, evaluate_task
from losslens.evaluate.scoring import Scorer
from losslens.evaluate.tasks import load_task
from losslens.evaluate.sweep import load_checkpoint
from tests.eval_fixtures import ALPHABET, MC_ROWS, save_checkpoint, write_jsonl

pytestmark = pytest.mark.lm_eval
torch.set_num_threads(1)


def _rows(n: int, seed: int = 0) -> list[dict]:
    """MC_ROWS plus random ones: varied lengths, choices with and without a leading space, contexts ending in one."""
    rng = np.random.default_rng(seed)
    letters = list(ALPHABET[2:40])

    def word(k):
        return "".join(rng.choice(letters, size=k))

    rows = list(MC_ROWS)
    while len(rows) < n:
        k = int(rng.integers(2, 6))
        context = word(int(rng.integers(1, 30))) + (" " if rng.random() < 0.3 else "")
        choices = [(" " if rng.random() < 0.5 else "") + word(int(rng.integers(1, 8))) for _ in range(k)]
        rows.append({"context": context, "choices": choices, "answer": int(rng.integers(0, k))})
    return rows


def test_accuracy_and_logliks_match_lm_eval(tmp_path):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    ckpt = save_checkpoint(tmp_path / "study", "xs_1", 1024, seed=1, context=128)
    rows = _rows(60)
    data = write_jsonl(tmp_path / "agree.jsonl", rows)
    harness_task_yaml(data, tmp_path / "harness", "losslens_agree")

    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={ckpt},dtype=float32", tasks=["losslens_agree"],
        task_manager=TaskManager(include_path=str(tmp_path / "harness")), device="cpu", batch_size=4,
        log_samples=True, bootstrap_iters=0,
    )
    theirs = out["results"]["losslens_agree"]
    samples = sorted(out["samples"]["losslens_agree"], key=lambda s: s["doc_id"])
    their_ll = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]

    model, tok = load_checkpoint(ckpt, "float32", "cpu")
    ours = evaluate_task(Scorer(model, tok, batch_size=8), load_task(data), TaskSettings(bootstrap=0), per_example=True)
    our_ll = [ex["logliks"] for ex in ours["examples"]]

    worst = max(abs(a - b) for xs, ys in zip(our_ll, their_ll) for a, b in zip(xs, ys))
    print(f"lm-eval acc {theirs['acc,none']:.4f}, losslens acc {ours['metrics']['acc']['value']:.4f}, "
          f"max |Δ loglik| = {worst:.2e} over {sum(map(len, our_ll))} choices")
    assert [len(x) for x in our_ll] == [len(r["choices"]) for r in rows]
    assert worst < 1e-4
    assert ours["metrics"]["acc"]["value"] == pytest.approx(theirs["acc,none"])
    # lm-eval's acc_norm divides by characters, ours by UTF-8 bytes: equal once lengths are counted alike
    by_chars = np.mean([float(np.argmax(np.array(ll) / [len(c) for c in r["choices"]]) == r["answer"])
                        for ll, r in zip(our_ll, rows)])
    assert by_chars == pytest.approx(theirs["acc_norm,none"])
