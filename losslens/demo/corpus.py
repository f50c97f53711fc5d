"""The demo corpus: a seeded stream of documents mixing a background language with skill data.

Background: "prose" from a Markov chain over a fixed vocabulary of made-up words (Zipf-weighted
successors). It carries most of the loss and is learned smoothly, word statistics first.

Skills, each a line of its own inside a document:

- ``addition``: ``a+b=c`` with the digits of ``c`` written least-significant first (reversed), so each
  answer digit depends only on the digits before it and a carry — a multi-token answer a small model
  gets right only once it has learned the whole algorithm.
- ``copy``: ``copy xkqbe:xkqbe`` — repeat a random letter string seen earlier in the context
  (in-context copying, which needs an induction head).
- ``proofread``: ``fix wjadn:jwadn`` — a short walk of the background language (one word by default,
  ``proofread_words``) with planted misspellings (two neighbouring letters swapped, a letter dropped or
  one doubled), then the corrected passage: copying in context, and knowing the vocabulary well enough
  to fix what is not a word.

Held-out items never occur in the stream by construction: an item belongs to the test split when a
hash of it (for ``proofread``, of the corrected passage) falls in a fixed residue class
(``is_test_item``), and the generator skips those items.
The tasks (``losslens.demo.tasks``) draw their items from that held-out class only.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field, fields
from typing import Iterator

import numpy as np

from losslens.errors import ConfigError

LETTERS = "abcdefghijklmnopqrstuvwxyz"
COMPONENTS = ("prose", "addition", "copy", "proofread")
ERROR_KINDS = ("swap", "drop", "double")


@dataclass
class DemoOptions:
    """The ``data.generator`` options of ``source: demo`` (all optional)."""

    n_documents: int = 6000  # documents in the corpus (the training stream cycles through them)
    lines_per_document: int = 12
    mixture: dict = field(default_factory=lambda: {"prose": 0.45, "addition": 0.2, "copy": 0.35})
    vocabulary: int = 400  # made-up words of the background language
    successors: int = 12  # possible next words per word
    digits: int = 2  # addition operands have up to this many digits
    copy_length: int = 4  # letters in a copy string
    proofread_words: int = 1  # words in a proofreading passage
    proofread_errors: int = 1  # misspelled words in it
    test_every: int = 7  # 1 in test_every items is held out for the tasks


def parse_options(options: dict) -> DemoOptions:
    known = {f.name for f in fields(DemoOptions)}
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(known))})"
            raise ConfigError(f"data.generator.{key}: unknown option of the demo corpus{hint}")
    opts = DemoOptions(**options)
    unknown = set(opts.mixture) - set(COMPONENTS)
    if unknown:
        raise ConfigError(f"data.generator.mixture: unknown component {sorted(unknown)[0]!r} ({', '.join(COMPONENTS)})")
    if not 1 <= opts.proofread_errors <= opts.proofread_words:
        raise ConfigError(f"data.generator.proofread_errors: {opts.proofread_errors} must be between 1 and "
                          f"proofread_words ({opts.proofread_words})")
    if not opts.mixture or sum(opts.mixture.values()) <= 0 or min(opts.mixture.values()) < 0:
        raise ConfigError("data.generator.mixture: weights must be non-negative and not all zero")
    return opts


def is_test_item(text: str, test_every: int) -> bool:
    """The held-out split: items whose hash is 0 modulo ``test_every``."""
    return int(hashlib.blake2b(text.encode(), digest_size=8).hexdigest(), 16) % test_every == 0


def addition_line(a: int, b: int) -> tuple[str, str]:
    """(prompt, answer) of one sum, the answer's digits reversed: 47+85= -> 231 (132 reversed)."""
    return f"{a}+{b}=", str(a + b)[::-1]


def copy_line(word: str) -> tuple[str, str]:
    return f"copy {word}:", word


def proofread_line(misspelled: str, passage: str) -> tuple[str, str]:
    return f"fix {misspelled}:", passage


def misspellings(word: str, kind: str) -> list[str]:
    """Every way to plant one error of ``kind`` in ``word`` (none where it would change nothing)."""
    n = len(word)
    if kind == "swap":  # two different neighbouring letters trade places
        return [word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(n - 1) if word[i] != word[i + 1]]
    if kind == "drop":  # keep at least two letters
        return [word[:i] + word[i + 1 :] for i in range(n)] if n >= 3 else []
    return [word[: i + 1] + word[i:] for i in range(n)]  # double


def misspell(words: list[str], n_errors: int, vocabulary: set[str], rng: np.random.Generator) -> list[str]:
    """``words`` with ``n_errors`` of them misspelled, each by one error of a random kind into a non-word."""
    out = list(words)
    for i in rng.choice(len(words), size=n_errors, replace=False):
        options = {k: [m for m in misspellings(words[i], k) if m not in vocabulary] for k in ERROR_KINDS}
        kinds = [k for k in ERROR_KINDS if options[k]]  # doubling always leaves a non-word in practice
        candidates = options[kinds[int(rng.integers(len(kinds)))]]
        out[i] = candidates[int(rng.integers(len(candidates)))]
    return out


class Language:
    """The background language: a Markov chain over made-up words, fixed by the seed."""

    def __init__(self, opts: DemoOptions, seed: int):
        rng = np.random.default_rng([seed, 1])
        words = set()
        while len(words) < opts.vocabulary:
            n = int(rng.integers(2, 7))
            words.add("".join(rng.choice(list(LETTERS), size=n)))
        self.words = sorted(words)
        self.vocabulary = set(self.words)
        v, k = len(self.words), opts.successors
        self.next = rng.integers(0, v, size=(v, k))  # successor ids per word
        weights = 1.0 / np.arange(1, k + 1) ** 1.2  # Zipf over the successors
        self.probs = weights / weights.sum()

    def walk(self, rng: np.random.Generator, n_words: int) -> list[int]:
        """Word ids of a random walk of the chain."""
        w = int(rng.integers(len(self.words)))
        picks = rng.choice(len(self.probs), size=n_words - 1, p=self.probs)
        ids = [w]
        for k in picks:
            w = int(self.next[w, k])
            ids.append(w)
        return ids

    def most_likely_next(self, word_id: int) -> int:
        return int(self.next[word_id, 0])

    def text(self, ids: list[int]) -> str:
        return " ".join(self.words[i] for i in ids)

    def sentence(self, rng: np.random.Generator, n_words: int) -> str:
        return self.text(self.walk(rng, n_words)) + "."

    def proofreading(self, rng: np.random.Generator, opts: DemoOptions) -> tuple[str, str]:
        """(passage, its misspelled version): a walk of ``opts.proofread_words`` words."""
        words = [self.words[i] for i in self.walk(rng, opts.proofread_words)]
        return " ".join(words), " ".join(misspell(words, opts.proofread_errors, self.vocabulary, rng))


def _skill_line(kind: str, rng: np.random.Generator, opts: DemoOptions, language: Language) -> str:
    """One training line of a skill, never a held-out item."""
    while True:
        if kind == "addition":
            hi = 10**opts.digits
            prompt, answer = addition_line(int(rng.integers(hi)), int(rng.integers(hi)))
            key = prompt
        elif kind == "copy":
            prompt, answer = copy_line("".join(rng.choice(list(LETTERS), size=opts.copy_length)))
            key = prompt
        else:  # proofread: held out by the corrected passage, whatever its misspelling
            passage, misspelled = language.proofreading(rng, opts)
            prompt, answer = proofread_line(misspelled, passage)
            key = passage
        if not is_test_item(key, opts.test_every):
            return prompt + answer


def demo_documents(options: dict, seed: int) -> Iterator[str]:
    """The demo corpus, document by document (deterministic in ``options`` and ``seed``)."""
    opts = parse_options(options)
    language = Language(opts, seed)
    rng = np.random.default_rng([seed, 2])
    kinds = list(opts.mixture)
    p = np.array([opts.mixture[k] for k in kinds], dtype=float)
    p /= p.sum()
    for _ in range(opts.n_documents):
        lines = []
        for kind in rng.choice(kinds, size=opts.lines_per_document, p=p):
            if kind == "prose":
                lines.append(language.sentence(rng, int(rng.integers(4, 10))))
            else:
                lines.append(_skill_line(kind, rng, opts, language))
        yield "\n".join(lines)
