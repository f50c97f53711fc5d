"""losslens.metrics: hand-computed values and edge cases for every metric function, and the registry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from losslens import contracts
from losslens import metrics as M

LOG = math.log


def test_metric_names_are_the_contract_names():
    kinds = (M.MULTIPLE_CHOICE, M.GENERATIVE, M.PRETRAIN)
    assert {m for kind in kinds for m in M.kind_metrics(kind)} == set(contracts.METRICS)
    assert M.kind_metrics(M.PRETRAIN) == ("loss", "bpb")
    for name, metric in contracts.METRICS.items():  # a task metric can be computed and has a direction
        assert contracts.metric_info(name) is metric
        assert (metric.per_example is None) == (metric.kinds == (M.PRETRAIN,)), name


# ---------------------------------------------------------------- multiple choice


def test_accuracy_argmax_and_ties():
    assert M.accuracy([-1.0, -2.0, -3.0], 0) == 1.0
    assert M.accuracy([-1.0, -2.0, -0.5], 0) == 0.0
    assert M.accuracy([-1.0, -1.0], 0) == 1.0  # ties go to the lowest index
    assert M.accuracy([-1.0, -1.0], 1) == 0.0
    assert M.accuracy([-7.0], 0) == 1.0  # one choice


def test_accuracy_rejects_bad_answers():
    with pytest.raises(ValueError, match="out of range"):
        M.accuracy([-1.0, -2.0], 2)
    with pytest.raises(ValueError):
        M.accuracy([], 0)


def test_accuracy_norm_divides_by_bytes():
    # summed: -4 < -3, so acc picks choice 1; per byte: -4/4 = -1 > -3/1 = -3, so acc_norm picks 0
    assert M.accuracy([-4.0, -3.0], 0) == 0.0
    assert M.accuracy_norm([-4.0, -3.0], [4, 1], 0) == 1.0
    # "é" is 2 UTF-8 bytes: -3/2 = -1.5 beats -2/1
    assert M.accuracy_norm([-3.0, -2.0], [len("é".encode()), len("e".encode())], 0) == 1.0
    with pytest.raises(ValueError):
        M.accuracy_norm([-1.0, -2.0], [1], 0)
    with pytest.raises(ValueError):
        M.accuracy_norm([-1.0, -2.0], [0, 1], 0)


def test_correct_choice_prob_is_softmax_of_logliks():
    assert M.correct_choice_prob([LOG(0.2), LOG(0.3), LOG(0.5)], 2) == pytest.approx(0.5)
    # unnormalized: exp(-1)/(exp(-1)+exp(-2)) = 1/(1+e^-1)
    assert M.correct_choice_prob([-1.0, -2.0], 0) == pytest.approx(1 / (1 + math.exp(-1)))
    assert M.correct_choice_prob([0.0, 0.0, 0.0, 0.0], 3) == pytest.approx(0.25)
    # huge magnitudes do not overflow
    assert M.correct_choice_prob([-1000.0, -1000.0], 1) == pytest.approx(0.5)
    assert M.correct_choice_prob([-1e5, 0.0], 0) == pytest.approx(0.0)


def test_brier_score_hand_values():
    assert M.brier_score([0.5, 0.3, 0.2], 0) == pytest.approx(0.25 + 0.09 + 0.04)
    assert M.brier_score([1.0, 0.0], 0) == 0.0  # certain and right
    assert M.brier_score([0.0, 1.0], 0) == pytest.approx(2.0)  # certain and wrong
    assert M.brier_score([0.25] * 4, 1) == pytest.approx(0.75)  # uniform: 1 - 1/k
    assert M.brier_score(M.choice_probs([-1.0, -1.0]), 0) == pytest.approx(0.5)


# ---------------------------------------------------------------- likelihoods


def test_loglik_per_token_and_byte():
    assert M.loglik_per_token(-6.0, 3) == -2.0
    assert M.loglik_per_token(-0.7, 1) == -0.7  # a one-token reference
    assert M.loglik_per_byte(-6.0, 4) == -1.5
    assert M.loglik_per_byte(-6.0, len("日本".encode())) == -1.0  # 6 bytes
    with pytest.raises(ValueError):
        M.loglik_per_token(-1.0, 0)
    with pytest.raises(ValueError):
        M.loglik_per_byte(-1.0, 0)


def test_token_prob_is_mean_probability():
    assert M.token_prob([LOG(0.5), LOG(0.25)]) == pytest.approx(0.375)
    assert M.token_prob([LOG(0.9)]) == pytest.approx(0.9)  # one reference token
    assert M.token_prob([0.0, 0.0]) == 1.0
    with pytest.raises(ValueError):
        M.token_prob([])


def test_bits_per_byte():
    assert M.bits_per_byte(LOG(2), 1, 1) == pytest.approx(1.0)
    assert M.bits_per_byte(2.0, 100, 400) == pytest.approx(2.0 * 0.25 / LOG(2))


# ---------------------------------------------------------------- generation


def test_exact_match_strips_only_whitespace():
    assert M.exact_match(" 42\n", "42") == 1.0
    assert M.exact_match("42", "\t42 ") == 1.0
    assert M.exact_match("42.", "42") == 0.0
    assert M.exact_match("Paris", "paris") == 0.0
    assert M.exact_match("Paris", "paris", normalize=str.lower) == 1.0
    assert M.exact_match("", "") == 1.0
    assert M.exact_match("", "x") == 0.0  # empty output
    assert M.exact_match("café", "café") == 1.0
    assert M.exact_match("café", "cafe\u0301") == 0.0  # NFC vs NFD: no Unicode normalisation
    assert M.exact_match("a b", "a  b") == 0.0  # inner whitespace counts


def test_token_edit_distance_hand_values():
    assert M.token_edit_distance("kitten", "sitting") == 3
    assert M.token_edit_distance([1, 2, 3], [1, 3]) == 1
    assert M.token_edit_distance([1, 2, 3], [3, 2, 1]) == 2
    assert M.token_edit_distance([], [5]) == 1  # empty output, one-token reference
    assert M.token_edit_distance([5], [5]) == 0
    assert M.token_edit_distance("", "") == 0
    assert M.token_edit_distance("", "abc") == 3
    assert M.token_edit_distance("naïve", "naive") == 1  # one Unicode character, not bytes
    assert M.token_edit_distance("日本語", "日本") == 1
    assert M.token_edit_distance(["ab", "c"], ["ab", "d"]) == 1  # token strings are whole symbols
    assert M.token_edit_distance((1, 2), [1, 2]) == 0
    with pytest.raises(TypeError):
        M.token_edit_distance("ab", ["a", "b"])


def test_normalized_edit_distance():
    assert M.normalized_edit_distance([], [7]) == 1.0
    assert M.normalized_edit_distance([7], [7]) == 0.0
    assert M.normalized_edit_distance([1, 2, 3], [9]) == 3.0  # longer output: above 1
    assert M.normalized_edit_distance([1, 2], [1, 2, 3, 4]) == 0.5
    assert M.normalized_edit_distance([1, 2], []) == 2.0  # empty reference divides by 1


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_ci_properties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=400).astype(float)
    low, high = M.bootstrap_ci(x, 2000, 0.95, seed=1)
    assert low < x.mean() < high
    # the normal approximation of a proportion: half-width 1.96 sqrt(p(1-p)/n)
    half = 1.96 * math.sqrt(x.mean() * (1 - x.mean()) / len(x))
    assert (high - low) / 2 == pytest.approx(half, rel=0.15)
    assert M.bootstrap_ci(x, 2000, 0.95, seed=1) == (low, high)  # deterministic
    narrow = M.bootstrap_ci(x, 2000, 0.5, seed=1)
    assert low < narrow[0] < narrow[1] < high


def test_bootstrap_edge_cases():
    assert M.bootstrap_ci([1.0, 1.0, 1.0], 100) == (1.0, 1.0)
    assert all(math.isnan(v) for v in M.bootstrap_ci([0.3], 100))  # one value: no spread
    with pytest.raises(ValueError):
        M.bootstrap_ci([], 100)
    agg = M.aggregate([0.0, 1.0, 1.0, 1.0], 500, 0.9, seed=0)
    assert agg["value"] == 0.75 and agg["n"] == 4 and agg["ci_low"] <= 0.75 <= agg["ci_high"]
