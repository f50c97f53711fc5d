"""Scoring and generation: shared-context packing equals plain scoring, batch size changes nothing, greedy with a cache equals greedy without."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from losslens.evaluate.generation import cut_at_stop, greedy_generate
from losslens.evaluate.requests import GenerationRequest, LoglikelihoodRequest, encode_pairs
from losslens.evaluate.runner import TaskSettings, evaluate_task
from losslens.evaluate.scoring import Scorer
from losslens.evaluate.tasks import load_task
from tests.eval_fixtures import GEN_ROWS, MC_ROWS, char_tokenizer, score_one, tiny_model, write_jsonl

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lm():
    tok = char_tokenizer()
    return tiny_model(len(tok), seed=3, context=48), tok


def encode_pair(tok, context: str, continuation: str) -> LoglikelihoodRequest:
    return encode_pairs(tok, [(context, continuation)])[0]


def _mc_requests(tok):
    return encode_pairs(tok, [(r["context"], c) for r in MC_ROWS for c in r["choices"]])


def test_encode_pair_moves_trailing_space_and_fills_empty_context(lm):
    _, tok = lm
    req = encode_pair(tok, "1+1= ", "2")
    assert req.context_ids == tuple(tok("1+1=")["input_ids"])
    assert req.continuation_ids == tuple(tok(" 2")["input_ids"])
    empty = encode_pair(tok, "", "ab")
    assert empty.context_ids == (tok.eos_token_id,) and empty.continuation_ids == tuple(tok("ab")["input_ids"])


def test_packed_scoring_equals_one_sequence_per_request(lm):
    model, tok = lm
    requests = _mc_requests(tok) + [encode_pair(tok, "", "xyz")]
    scorer = Scorer(model, tok, batch_size=4)
    assert scorer.pack  # the self-check accepted the 4-D mask
    got = scorer.loglikelihood(requests)
    for req, res in zip(requests, got):
        ref = score_one(model, tok, req)
        assert res.loglik == pytest.approx(ref.loglik, abs=1e-5)
        np.testing.assert_allclose(res.token_logprobs, ref.token_logprobs, atol=1e-5)
        assert res.is_greedy == ref.is_greedy
        assert len(res.token_logprobs) == len(req.continuation_ids)
    plain = Scorer(model, tok, batch_size=4, pack=False).loglikelihood(requests)
    assert max(abs(a.loglik - b.loglik) for a, b in zip(got, plain)) < 1e-5


def test_batch_size_does_not_change_results(lm):
    model, tok = lm
    requests = _mc_requests(tok)
    one = Scorer(model, tok, batch_size=1).loglikelihood(requests)
    many = Scorer(model, tok, batch_size=32).loglikelihood(requests)
    worst = max(abs(a.loglik - b.loglik) for a, b in zip(one, many))
    worst_tok = max(np.abs(a.token_logprobs - b.token_logprobs).max() for a, b in zip(one, many))
    print(f"batch 1 vs 32: max |Δ loglik| = {worst:.2e}, max |Δ token logprob| = {worst_tok:.2e}")
    assert worst < 1e-5 and worst_tok < 1e-5


def test_shared_context_is_one_row_and_duplicates_are_scored_once(lm):
    model, tok = lm
    scorer = Scorer(model, tok, batch_size=32)
    requests = _mc_requests(tok)
    scorer.loglikelihood(requests + requests)
    assert scorer.forward_passes == 1
    scorer = Scorer(model, tok, batch_size=1)
    scorer.loglikelihood(requests)
    assert scorer.forward_passes == len(MC_ROWS)  # one packed row per example, not one per choice


def test_long_context_is_truncated_from_the_left(lm):
    model, tok = lm
    long_ctx = tuple(tok("abc de 12+3=" * 10)["input_ids"])
    cont = tuple(tok(" 15")["input_ids"])
    scorer = Scorer(model, tok)
    res = scorer.loglikelihood([LoglikelihoodRequest(long_ctx, cont)])[0]
    keep = scorer.max_length + 1 - len(cont)  # input = the last max_length tokens of context + continuation
    ref = score_one(model, tok, LoglikelihoodRequest(long_ctx[-keep:], cont))
    assert res.loglik == pytest.approx(ref.loglik, abs=1e-5)


def _naive_greedy(model, tok, req: GenerationRequest) -> tuple[int, ...]:
    ids = list(req.prompt_ids)
    out = []
    with torch.no_grad():
        for _ in range(req.max_new_tokens):
            nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            out.append(nxt)
            ids.append(nxt)
            if any(s in tok.decode(out) for s in req.stop):
                break
    return tuple(out)


def test_greedy_generation_with_cache_and_padding(lm):
    model, tok = lm
    prompts = ["2+2=", "Say hi:", "a", "Count: 1 2 3 4 5", "xyz xyz"]
    requests = [GenerationRequest(tuple(tok(p)["input_ids"]), ("\n",) if i % 2 else (), 4 + i) for i, p in enumerate(prompts)]
    batched = greedy_generate(model, tok, requests, batch_size=8, max_length=48)
    single = greedy_generate(model, tok, requests, batch_size=1, max_length=48)
    for req, a, b in zip(requests, batched, single):
        assert a == b
        assert a.token_ids == _naive_greedy(model, tok, req)
        assert len(a.token_ids) <= req.max_new_tokens
        assert a.text == cut_at_stop(tok.decode(a.token_ids), req.stop)


def test_cut_at_stop():
    assert cut_at_stop("42\nQ: next", ["\n"]) == "42"
    assert cut_at_stop("ab.cd\n", ["\n", "."]) == "ab"
    assert cut_at_stop("abc", []) == "abc"
    assert cut_at_stop("", ["\n"]) == ""


def test_task_results_do_not_depend_on_batch_size(lm, tmp_path):
    model, tok = lm
    settings = TaskSettings(bootstrap=100)
    for rows in (MC_ROWS, GEN_ROWS):
        task = load_task(write_jsonl(tmp_path / f"t{len(rows)}.jsonl", rows))
        a = evaluate_task(Scorer(model, tok, batch_size=1), task, settings, per_example=True)
        b = evaluate_task(Scorer(model, tok, batch_size=32), task, settings, per_example=True)
        for m in task.metrics:
            assert a["metrics"][m]["value"] == pytest.approx(b["metrics"][m]["value"], abs=1e-5)
        assert [r.get("prediction") for r in a["examples"]] == [r.get("prediction") for r in b["examples"]]


@pytest.fixture
def ranking_kind():
    """The task kind docs/extending.md adds, run from the doc's own code; unregistered afterwards."""
    from dataclasses import dataclass

    from losslens import metrics
    from losslens.evaluate import kinds
    from losslens.evaluate.requests import encode_pairs

    doc = (Path(__file__).resolve().parents[1] / "docs" / "extending.md").read_text()
    code = re.search(r"## Adding a task kind.*?```python\n(.*?)```", doc, re.S).group(1)
    namespace = {"dataclass": dataclass, "np": np, "encode_pairs": encode_pairs, "ChoiceOutcome": metrics.ChoiceOutcome,
                 "TaskKind": kinds.TaskKind, "register_kind": kinds.register_kind, "register": metrics.register,
                 "Metric": metrics.Metric, "accuracy": metrics.accuracy, "chance_one_in_k": metrics.chance_one_in_k}
    exec(compile(code, "docs/extending.md", "exec"), namespace)
    yield namespace["RANKING"]
    del kinds.TASK_KINDS["ranking"], metrics.METRICS["top1"]


def test_a_task_kind_declared_once_is_loaded_and_evaluated(lm, tmp_path, ranking_kind):
    model, tok = lm
    rows = [{"query": "2+2=", "candidates": ["4", "5", "22"], "best": 0},
            {"query": "The sky is", "candidates": ["blue", "green"], "best": 1}]
    task = load_task(write_jsonl(tmp_path / "rank.jsonl", rows))
    assert task.kind == ranking_kind and task.metrics == ("top1",)
    assert task.chance_levels()["top1"] == (1 / 3 + 1 / 2) / 2
    scorer = Scorer(model, tok)
    result = evaluate_task(scorer, task, TaskSettings(bootstrap=0), per_example=True)
    expected = []
    for r in rows:
        per_token = [score_one(model, tok, encode_pair(tok, r["query"], " " + c)) for c in r["candidates"]]
        expected.append(float(np.argmax([x.loglik / len(x.token_logprobs) for x in per_token]) == r["best"]))
    assert [ex["top1"] for ex in result["examples"]] == expected
    assert result["metrics"]["top1"]["value"] == pytest.approx(np.mean(expected))
