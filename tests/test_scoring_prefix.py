"""Scoring after a shared, cached context prefix (few-shot shots, descriptions) gives what whole rows give."""

from __future__ import annotations

import pytest
import torch

from losslens.evaluate.requests import encode_pairs
from losslens.evaluate.scoring import MIN_SHARED_PREFIX, Scorer, _prefix_groups, _Row
from tests.eval_fixtures import char_tokenizer, tiny_model

torch.set_num_threads(1)


def _few_shot_pairs() -> list[tuple[str, str]]:
    """Three 'subjects', each with its own shots repeated before every question; plus a zero-shot question."""
    pairs = []
    for subject in ("ab", "cd", "ef"):
        shots = "".join(f"{subject} q{i}: {subject * i} a: {i}\n" for i in range(4))
        for q in range(5):
            pairs += [(f"{shots}{subject} q{q + 9}: {subject[::-1] * q} a:", f" {c}") for c in ("1", "22", "333")]
    return pairs + [("short q:", " 1"), ("short q:", " 22")]


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_shared_prefix_scores_equal_whole_rows(batch_size):
    tok = char_tokenizer()
    requests = encode_pairs(tok, _few_shot_pairs())
    contexts = {r.context_ids for r in requests}
    groups, _ = _prefix_groups([_Row(c, [(1,)], c) for c in contexts], MIN_SHARED_PREFIX)
    assert len(groups) == 3  # one per subject: the shots are shared, the short question is not
    scorer = Scorer(tiny_model(len(tok), seed=2, context=256), tok, batch_size=batch_size)
    assert scorer.share_prefix
    shared = scorer.loglikelihood(requests)
    scorer.share_prefix = False
    whole = scorer.loglikelihood(requests)
    worst = max(abs(a.loglik - b.loglik) for a, b in zip(shared, whole))
    assert worst < 1e-4, worst
    assert all(a.token_logprobs.shape == b.token_logprobs.shape and a.is_greedy == b.is_greedy
               for a, b in zip(shared, whole))


def test_rows_are_grouped_by_their_common_prefix():
    shots = {s: tuple(range(s * 100, s * 100 + MIN_SHARED_PREFIX + 5)) for s in (1, 2)}
    rows = [_Row(shots[s] + (q, q + 1), [(7,)], shots[s] + (q, q + 1)) for s in (1, 2) for q in (1, 2, 3)]
    alone = _Row((5,) * (MIN_SHARED_PREFIX + 9), [(7,)], (5,) * (MIN_SHARED_PREFIX + 9))
    truncated = _Row(shots[1] + (4,), [(7,)], (9,) + shots[1] + (4,))  # kept whole: its context was cut
    groups, rest = _prefix_groups(rows + [alone, truncated], MIN_SHARED_PREFIX)
    assert [(prefix, len(members)) for prefix, members in groups] == [(shots[1], 3), (shots[2], 3)]
    assert sorted(map(id, rest)) == sorted(map(id, [alone, truncated]))


def test_a_prefix_never_takes_a_row_s_last_context_token():
    ctx = tuple(range(MIN_SHARED_PREFIX + 1))
    rows = [_Row(ctx, [(1,)], ctx), _Row(ctx + (9,), [(1,)], ctx + (9,))]
    (prefix, members), = _prefix_groups(rows, MIN_SHARED_PREFIX)[0]
    assert len(prefix) == len(ctx) - 1 and len(members) == 2


def _raise(error: BaseException):
    def fail(*args, **kwargs):
        raise error
    return fail


def test_a_cache_that_cannot_be_shared_falls_back_with_a_warning():
    tok = char_tokenizer()
    scorer = Scorer(tiny_model(len(tok), seed=2, context=256), tok, batch_size=4)
    scorer._score_group = _raise(TypeError("cache has no crop()"))  # as a model with an odd cache raises
    with pytest.warns(UserWarning, match=r"TypeError: cache has no crop\(\).*encoding every context whole"):
        assert scorer._sharing_agrees() is False


def test_out_of_memory_in_the_prefix_check_surfaces():
    tok = char_tokenizer()
    scorer = Scorer(tiny_model(len(tok), seed=2, context=256), tok, batch_size=4)
    scorer._score_group = _raise(torch.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(torch.OutOfMemoryError):
        scorer._sharing_agrees()
