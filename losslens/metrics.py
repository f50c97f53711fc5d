"""Metrics: pure per-example functions, their bootstrap aggregate, and the registry that declares each metric once.

Two families, following Schaeffer et al. (2023, *Are Emergent Abilities of Large Language Models a
Mirage?*) and Du et al. (2024, *Understanding Emergent Abilities of Language Models from the Loss
Perspective*):

* discontinuous — a hard threshold on a score: :func:`accuracy`, :func:`accuracy_norm`,
  :func:`exact_match`;
* continuous — change smoothly as the model improves: :func:`correct_choice_prob`,
  :func:`brier_score`, :func:`loglik_per_token`, :func:`loglik_per_byte`, :func:`token_prob`,
  :func:`token_edit_distance` and :func:`normalized_edit_distance`.

Every function here takes one example's numbers and returns one number; :func:`bootstrap_ci`
turns the per-example values of a task into a mean with a confidence interval.

**The registry** (:data:`METRICS`, at the end of the file) holds one :class:`Metric` record per
metric: its name in ``results.csv``, the task kinds it applies to, how it reads one example's
outcome (:class:`ChoiceOutcome` or :class:`GenerationOutcome`), whether it is discontinuous, which
way is better, its chance-level rule and the values it can take. Everything else is derived from it: the metrics of a
task kind (:func:`kind_metrics`), how ``analyze`` reads a metric (``losslens.contracts.metric_info``)
and the per-example values the evaluator writes. This module imports only numpy and rapidfuzz, so
``analyze`` reads the registry without torch. Nothing here touches a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from statistics import NormalDist
from typing import Any, Callable, Optional, Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein

# ---------------------------------------------------------------- multiple choice


def _as_array(values: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what}: expected a non-empty 1-D sequence, got shape {arr.shape}")
    return arr


def _check_answer(answer: int, k: int) -> None:
    if not 0 <= answer < k:
        raise ValueError(f"answer index {answer} is out of range for {k} choices")


def accuracy(logliks: Sequence[float], answer: int) -> float:
    """Multiple-choice grade: 1.0 when the answer has the highest log-likelihood, else 0.0.

    acc = 1[argmax_k ℓ_k = answer], with ℓ_k = Σ_t log p(choice_k,t | context, choice_k,<t) the
    summed log-likelihood of choice k. Ties go to the lowest index (as ``numpy.argmax`` and
    lm-evaluation-harness do), so a model that scores every choice alike is right only when the
    answer is choice 0.
    """
    ll = _as_array(logliks, "logliks")
    _check_answer(answer, len(ll))
    return float(int(np.argmax(ll)) == answer)


def accuracy_norm(logliks: Sequence[float], n_bytes: Sequence[int], answer: int) -> float:
    """Length-normalized multiple-choice grade: the argmax of log-likelihood per byte of choice.

    acc_norm = 1[argmax_k ℓ_k / B_k = answer], with B_k the UTF-8 byte length of choice k's text
    (lm-evaluation-harness divides by the number of characters, which is the same for ASCII text).
    Removes the bias of summed log-likelihoods towards short choices.
    """
    ll = _as_array(logliks, "logliks")
    nb = _as_array(n_bytes, "n_bytes")
    if len(nb) != len(ll):
        raise ValueError(f"{len(ll)} log-likelihoods but {len(nb)} byte counts")
    if np.any(nb <= 0):
        raise ValueError("every choice needs at least one byte")
    _check_answer(answer, len(ll))
    return float(int(np.argmax(ll / nb)) == answer)


def choice_probs(logliks: Sequence[float]) -> np.ndarray:
    """The choices' probabilities normalized over the choices: p_k = exp ℓ_k / Σ_j exp ℓ_j (a softmax)."""
    ll = _as_array(logliks, "logliks")
    z = np.exp(ll - ll.max())  # shift by the max: exp never overflows, the ratio is unchanged
    return z / z.sum()


def correct_choice_prob(logliks: Sequence[float], answer: int) -> float:
    """Probability of the correct choice, normalized over the choices (Du et al. 2024, "CorrectChoiceProb").

    prob_correct = exp ℓ_a / Σ_k exp ℓ_k, the softmax of the choices' summed log-likelihoods at
    the answer a. Continuous counterpart of :func:`accuracy`; 1/k for a model that cannot tell the
    choices apart.
    """
    p = choice_probs(logliks)
    _check_answer(answer, len(p))
    return float(p[answer])


def brier_score(probs: Sequence[float], answer: int) -> float:
    """Multi-class Brier score (Brier 1950; used by Schaeffer et al. 2023): lower is better.

    brier = Σ_k (p_k − 1[k = answer])², over the k choices, with p the choice probabilities
    (for a model, :func:`choice_probs` of its log-likelihoods). 0 for a certain right answer,
    2 for a certain wrong one, 1 − 1/k for the uniform guess.
    """
    p = _as_array(probs, "probs")
    _check_answer(answer, len(p))
    target = np.zeros_like(p)
    target[answer] = 1.0
    return float(np.sum((p - target) ** 2))


# ---------------------------------------------------------------- likelihood of a target


def loglik_per_token(loglik: float, n_tokens: int) -> float:
    """Log-likelihood of the target per token, ℓ / T (nats; ≤ 0, higher is better).

    exp of it is the geometric mean of the target tokens' probabilities. The token count
    depends on the tokenizer: compare across tokenizers with :func:`loglik_per_byte`.
    """
    if n_tokens <= 0:
        raise ValueError("a target needs at least one token")
    return float(loglik) / n_tokens


def loglik_per_byte(loglik: float, n_bytes: int) -> float:
    """Log-likelihood of the target per UTF-8 byte of its text, ℓ / B (nats; tokenizer-independent)."""
    if n_bytes <= 0:
        raise ValueError("a target needs at least one byte")
    return float(loglik) / n_bytes


def token_prob(token_logprobs: Sequence[float]) -> float:
    """Mean teacher-forced probability of each reference token: (1/T) Σ_t exp log p(y_t | x, y_<t).

    Each reference token is scored given the prompt and the *reference's* preceding tokens
    (teacher forcing), not the model's own output. Schaeffer et al. (2023) model a target of T
    tokens as solved with probability p^T where p is the per-token probability of the correct
    token; this is the arithmetic mean of those per-token probabilities (the geometric mean is
    exp of :func:`loglik_per_token`).
    """
    lp = _as_array(token_logprobs, "token_logprobs")
    return float(np.mean(np.exp(lp)))


# ---------------------------------------------------------------- generation


def exact_match(pred: str, ref: str, normalize: Optional[Callable[[str], str]] = None) -> float:
    """1.0 when ``pred`` equals ``ref`` after stripping surrounding whitespace, else 0.0.

    No other normalisation (case, punctuation, Unicode form all count). ``normalize``, if given,
    is applied to both stripped strings before comparing, e.g. ``str.lower``.
    """
    a, b = pred.strip(), ref.strip()
    if normalize is not None:
        a, b = normalize(a), normalize(b)
    return float(a == b)


def token_edit_distance(pred: Sequence, ref: Sequence) -> int:
    """Unit-cost Levenshtein distance between two sequences (Schaeffer et al. 2023, "Token Edit Distance").

    The least number of single-element insertions, deletions and substitutions turning ``pred``
    into ``ref``. Elements are token ids or strings; a ``str`` is a sequence of characters (so
    two strings give their character edit distance). Symmetric; 0 iff the sequences are equal;
    ``len(ref)`` when ``pred`` is empty.
    """
    if isinstance(pred, str) != isinstance(ref, str):
        raise TypeError("compare two strings or two sequences of tokens, not one of each")
    if not isinstance(pred, str):
        pred, ref = list(pred), list(ref)
    return int(Levenshtein.distance(pred, ref))


def normalized_edit_distance(pred: Sequence, ref: Sequence) -> float:
    """Token edit distance divided by the reference length: d(pred, ref) / max(len(ref), 1).

    0 for a perfect output, 1 for an empty output (or one sharing nothing with a reference of
    equal length); it can exceed 1 when the output is longer than the reference. An empty
    reference divides by 1 (the distance is then the output length).
    """
    return token_edit_distance(pred, ref) / max(len(ref), 1)


# ---------------------------------------------------------------- pretraining loss


def bits_per_byte(loss: float, n_tokens: int, n_bytes: int) -> float:
    """Cross-entropy in bits per UTF-8 byte: bpb = loss · (T / B) / ln 2, from nats per token.

    T tokens encode B bytes of text, so T·loss nats cover B bytes. Studies with different
    tokenizers compare in bpb, not in nats per token.
    """
    if n_tokens <= 0 or n_bytes <= 0:
        raise ValueError("need positive token and byte counts")
    return float(loss) * (n_tokens / n_bytes) / math.log(2)


# ---------------------------------------------------------------- aggregation


def bootstrap_ci(
    values: Sequence[float], n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values``.

    Resample the n values with replacement ``n_resamples`` times, take each resample's mean,
    and return the (1−c)/2 and (1+c)/2 quantiles of those means. Deterministic for a given
    ``seed``. One value (or ``n_resamples`` = 0) gives (nan, nan): there is no spread to measure.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("bootstrap needs at least one value")
    if x.size == 1 or n_resamples <= 0:
        return float("nan"), float("nan")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 4_000_000 // x.size)  # bound the index matrix to ~32 MB
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def aggregate(
    values: Sequence[float], n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict:
    """Mean of per-example values with its bootstrap interval: ``{value, ci_low, ci_high, n}``."""
    x = np.asarray(values, dtype=np.float64)
    low, high = bootstrap_ci(x, n_resamples, confidence, seed)
    mean = float(x.mean())
    if math.isfinite(low):  # a few resamples of a skewed sample can all miss the mean; an interval holds its value
        low, high = min(low, mean), max(high, mean)
    return {"value": mean, "ci_low": low, "ci_high": high, "n": int(x.size)}


def normal_interval(value: float, stderr: float, confidence: float) -> tuple[float, float]:
    """Normal-approximation interval value ± z·stderr, z the (1+c)/2 standard normal quantile (1.96 at 0.95).

    A non-finite standard error (one sample) gives (nan, nan).
    """
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    half = z * stderr if math.isfinite(stderr) else float("nan")
    return value - half, value + half


# ---------------------------------------------------------------- what one example gives its metrics

MULTIPLE_CHOICE = "multiple_choice"
GENERATIVE = "generative"
PRETRAIN = "pretrain"  # the pretraining loss: the x-axis of a study, measured on validation tokens


@dataclass(frozen=True)
class ChoiceOutcome:
    """A multiple-choice example as the model scored it: each choice's summed log-likelihood and lengths."""

    logliks: np.ndarray  # ℓ_k, nats
    n_tokens: tuple[int, ...]  # tokens of each choice
    n_bytes: tuple[int, ...]  # UTF-8 bytes of each choice
    answer: int

    @cached_property
    def probs(self) -> np.ndarray:
        return choice_probs(self.logliks)

    # The target is the correct choice: what the likelihood metrics shared with generative tasks read.
    @property
    def target_loglik(self) -> float:
        return float(self.logliks[self.answer])

    @property
    def target_tokens(self) -> int:
        return self.n_tokens[self.answer]

    @property
    def target_bytes(self) -> int:
        return self.n_bytes[self.answer]


@dataclass(frozen=True)
class GenerationOutcome:
    """A generative example: the greedy output, and the reference scored by teacher forcing."""

    prediction: str  # greedy output, cut before the stop string
    reference: str
    loglik: float  # Σ_t log p(reference_t | prompt, reference_<t)
    token_logprobs: np.ndarray = field(repr=False)
    prediction_ids: tuple[int, ...] = ()  # tokens of the stripped output and reference (edit distance)
    reference_ids: tuple[int, ...] = ()

    @property
    def target_loglik(self) -> float:
        return self.loglik

    @property
    def target_tokens(self) -> int:
        return len(self.token_logprobs)

    @property
    def target_bytes(self) -> int:
        return len(self.reference.encode("utf-8"))


# ---------------------------------------------------------------- chance-level rules
# A rule maps (number of choices of each example, or None for generative tasks; the chance the task
# file states, or None) to the metric's chance level: what a model that cannot tell the choices apart scores.


def chance_one_in_k(n_choices: Optional[np.ndarray], stated: Optional[float]) -> Optional[float]:
    """The stated chance, else the mean of 1/k over examples with k choices."""
    if stated is not None:
        return stated
    return float((1.0 / n_choices).mean()) if n_choices is not None else None


def chance_uniform_brier(n_choices: Optional[np.ndarray], stated: Optional[float]) -> Optional[float]:
    """Brier score of uniform probabilities: the mean of 1 − 1/k."""
    return float((1.0 - 1.0 / n_choices).mean()) if n_choices is not None else None


def chance_stated_or_zero(n_choices: Optional[np.ndarray], stated: Optional[float]) -> Optional[float]:
    """The stated chance, else 0 (an exact match is not guessed)."""
    return stated if stated is not None else 0.0


# ---------------------------------------------------------------- the registry

ChanceRule = Callable[[Optional[np.ndarray], Optional[float]], Optional[float]]


@dataclass(frozen=True)
class Metric:
    """One metric, declared once: everything the evaluator and ``analyze`` need to know about it."""

    name: str  # its name in results.csv and in per-example records
    description: str
    discontinuous: bool  # a hard threshold on a score (accuracy, exact match), or continuous
    higher_is_better: bool
    kinds: tuple[str, ...] = ()  # task kinds it applies to (empty: a metric of a table made elsewhere)
    per_example: Optional[Callable[[Any], float]] = field(default=None, repr=False)  # outcome -> value
    chance: Optional[ChanceRule] = field(default=None, repr=False)  # None: no chance level
    bounds: tuple[float, float] = (-math.inf, math.inf)  # the values it can take: a table outside them is wrong


METRICS: dict[str, Metric] = {}


def add_once(registry: dict, name: str, item: Any, what: str) -> Any:
    """``registry[name] = item``; a name declared twice is a mistake, not an override."""
    if name in registry:
        raise ValueError(f"{what} {name!r} is already registered")
    registry[name] = item
    return item


def register(metric: Metric) -> Metric:
    """Add a metric to the registry (a task kind's default metrics follow registration order)."""
    return add_once(METRICS, metric.name, metric, "metric")


def kind_metrics(kind: str) -> tuple[str, ...]:
    """The metrics of a task kind, in registration order."""
    return tuple(m.name for m in METRICS.values() if kind in m.kinds)


def chance_levels(names: Sequence[str], n_choices: Optional[np.ndarray], stated: Optional[float]) -> dict:
    """Each named metric's chance level by its rule (None where it has none)."""
    return {n: METRICS[n].chance(n_choices, stated) if METRICS[n].chance else None for n in names}


_MC, _GEN, _BOTH = (MULTIPLE_CHOICE,), (GENERATIVE,), (MULTIPLE_CHOICE, GENERATIVE)
FRACTION, NON_NEGATIVE, NON_POSITIVE = (0.0, 1.0), (0.0, math.inf), (-math.inf, 0.0)

register(Metric("loss", "validation cross-entropy, nats per token (task 'pretrain')", False, False, (PRETRAIN,),
                bounds=NON_NEGATIVE))
register(Metric("bpb", "validation bits per UTF-8 byte (task 'pretrain')", False, False, (PRETRAIN,),
                bounds=NON_NEGATIVE))
register(Metric("acc", "multiple-choice accuracy (argmax of summed log-likelihood)", True, True, _MC,
                lambda o: accuracy(o.logliks, o.answer), chance_one_in_k, bounds=FRACTION))
register(Metric("acc_norm", "multiple-choice accuracy, log-likelihood per byte of choice", True, True, _MC,
                lambda o: accuracy_norm(o.logliks, o.n_bytes, o.answer), chance_one_in_k, bounds=FRACTION))
register(Metric("exact_match", "greedy output equals the reference (stripped)", True, True, _GEN,
                lambda o: exact_match(o.prediction, o.reference), chance_stated_or_zero, bounds=FRACTION))
register(Metric("prob_correct", "softmax over choices' log-likelihoods at the answer", False, True, _MC,
                lambda o: correct_choice_prob(o.logliks, o.answer), chance_one_in_k, bounds=FRACTION))
register(Metric("brier", "multi-class Brier score over the choices", False, False, _MC,
                lambda o: brier_score(o.probs, o.answer), chance_uniform_brier, bounds=(0.0, 2.0)))
register(Metric("token_prob", "mean teacher-forced probability of each reference token", False, True, _GEN,
                lambda o: token_prob(o.token_logprobs), bounds=FRACTION))
register(Metric("loglik_token", "target log-likelihood per token", False, True, _BOTH,
                lambda o: loglik_per_token(o.target_loglik, o.target_tokens), bounds=NON_POSITIVE))
register(Metric("loglik_byte", "target log-likelihood per byte", False, True, _BOTH,
                lambda o: loglik_per_byte(o.target_loglik, o.target_bytes), bounds=NON_POSITIVE))
register(Metric("edit_distance", "token edit distance, greedy output vs reference", False, False, _GEN,
                lambda o: float(token_edit_distance(o.prediction_ids, o.reference_ids)), bounds=NON_NEGATIVE))
register(Metric("edit_distance_norm", "token edit distance / reference length", False, False, _GEN,
                lambda o: normalized_edit_distance(o.prediction_ids, o.reference_ids), bounds=NON_NEGATIVE))


def metric_name(metric: str, filt: str) -> str:
    """lm-eval's ``acc,none`` -> ``acc``; ``exact_match,strict-match`` -> ``exact_match:strict-match``."""
    return metric if filt == "none" else f"{metric}:{filt}"
