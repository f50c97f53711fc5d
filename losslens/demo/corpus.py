"""The demo corpus: a seeded stream of documents mixing a background language with skill data.

Background: "prose" from a Markov chain over a fixed vocabulary of made-up words (Zipf-weighted
successors). It carries most of the loss and is learned smoothly, word statistics first.

Skills, each a line of its own inside a document:

- ``addition``: ``a+b=c`` with the digits of ``c`` written least-significant first (reversed), so each
  answer digit depends only on the digits before it and a carry — a multi-token answer a small model
  gets right only once it has learned the whole algorithm.
- ``copy``: ``copy xkqbe:xkqbe`` — repeat a random letter string seen earlier in the context
  (in-context copying, which needs an induction head).

Held-out items never occur in the stream by construction: an item belongs to the test split when a
hash of it falls in a fixed residue class (``is_test_item``), and the generator skips those items.
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
    test_every: int = 7  # 1 in test_every items is held out for the tasks


def parse_options(options: dict) -> DemoOptions:
    known = {f.name for f in fields(DemoOptions)}
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(known))})"
            raise ConfigError(f"data.generator.{key}: unknown option of the demo corpus{hint}")
    opts = DemoOptions(**options)
    unknown = set(opts.mixture) - {"prose", "addition", "copy"}
    if unknown:
        raise ConfigError(f"data.generator.mixture: unknown component {sorted(unknown)[0]!r} (prose, addition, copy)")
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


class Language:
    """The background language: a Markov chain over made-up words, fixed by the seed."""

    def __init__(self, opts: DemoOptions, seed: int):
        rng = np.random.default_rng([seed, 1])
        words = set()
        while len(words) < opts.vocabulary:
            n = int(rng.integers(2, 7))
            words.add("".join(rng.choice(list(LETTERS), size=n)))
        self.words = sorted(words)
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


def _skill_line(kind: str, rng: np.random.Generator, opts: DemoOptions) -> str:
    """One training line of a skill, never a held-out item."""
    while True:
        if kind == "addition":
            hi = 10**opts.digits
            prompt, answer = addition_line(int(rng.integers(hi)), int(rng.integers(hi)))
        else:
            prompt, answer = copy_line("".join(rng.choice(list(LETTERS), size=opts.copy_length)))
        if not is_test_item(prompt, opts.test_every):
            return prompt + answer


def iter_documents(options: dict, seed: int) -> Iterator[str]:
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
                lines.append(_skill_line(kind, rng, opts))
        yield "\n".join(lines)
