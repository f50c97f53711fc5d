"""The demo's proofreading task: passages with planted misspellings, held out from the training stream."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from losslens.config import load_study
from losslens.demo.corpus import Language, demo_documents, parse_options
from losslens.demo.tasks import materialize
from losslens.errors import ConfigError
from losslens.evaluate.tasks import load_task
from losslens.metrics import GENERATIVE
from losslens.train.tokenizer import char_tokenizer
from tests.conftest import ROOT

N_DOCUMENTS = 800  # a slice of the demo's corpus: enough lines of every kind, fast to generate


@pytest.fixture(scope="module")
def study():
    study = load_study(ROOT / "configs" / "demo.yaml")
    study.data.generator = {**study.data.generator, "n_documents": N_DOCUMENTS}
    return study


@pytest.fixture(scope="module")
def training_text(study) -> str:
    return "\n".join(demo_documents(study.data.generator, study.corpus_seed))


@pytest.fixture(scope="module")
def items(study, tmp_path_factory) -> list[dict]:
    path = materialize("proofread", tmp_path_factory.mktemp("study"), study)
    return [json.loads(line) for line in (path.parent / "proofread.jsonl").read_text().splitlines()]


def error_kind(wrong: str, right: str) -> str | None:
    """Which single error turns ``right`` into ``wrong``, told from the strings alone."""
    n = len(right)
    if len(wrong) == n:
        diff = [i for i in range(n) if wrong[i] != right[i]]
        if len(diff) == 2 and diff[1] == diff[0] + 1 and wrong[diff[0]] == right[diff[1]] and wrong[diff[1]] == right[diff[0]]:
            return "swap"
    if len(wrong) == n - 1 and n >= 3 and any(right[:i] + right[i + 1 :] == wrong for i in range(n)):
        return "drop"
    if len(wrong) == n + 1 and any(right[: i + 1] + right[i] + right[i + 1 :] == wrong for i in range(n)):
        return "double"
    return None


def parse(line: str) -> tuple[list[str], list[str]]:
    """(misspelled words, corrected words) of ``fix MISSPELLED:CORRECTED``."""
    assert line.startswith("fix ") and line.count(":") == 1, line
    misspelled, corrected = line[len("fix ") :].split(":")
    return misspelled.split(" "), corrected.split(" ")


def test_no_proofread_test_item_occurs_in_the_training_stream(items, training_text):
    lines = training_text.splitlines()
    training_fixes = [line for line in lines if line.startswith("fix ")]
    assert len(training_fixes) > 500  # the stream does teach proofreading
    questions = {line[: line.find(":") + 1] for line in training_fixes}
    passages = {line[line.find(":") + 1 :] for line in training_fixes}
    assert len(items) == 150 and len({item["prompt"] for item in items}) == 150
    for item in items:
        assert item["prompt"] not in questions and item["prompt"] not in training_text, item
        assert item["reference"] not in passages, item  # not even with another misspelling


def test_planted_errors_are_of_the_three_kinds_and_the_passages_decode(study, items, training_text):
    opts = parse_options(study.data.generator)
    vocabulary = Language(opts, study.corpus_seed).vocabulary
    training = [line for line in training_text.splitlines() if line.startswith("fix ")]
    kinds = Counter()
    for line in training + [item["prompt"] + item["reference"] for item in items]:
        misspelled, corrected = parse(line)
        assert len(misspelled) == len(corrected) == opts.proofread_words, line
        assert all(word in vocabulary for word in corrected), line
        errors = [(w, r) for w, r in zip(misspelled, corrected) if w != r]
        assert len(errors) == opts.proofread_errors, line
        for wrong, right in errors:
            assert wrong not in vocabulary, line  # a misspelling never makes another word
            kind = error_kind(wrong, right)
            assert kind is not None, line
            kinds[kind] += 1
    assert set(kinds) == {"swap", "drop", "double"}
    assert min(kinds.values()) > 0.2 * sum(kinds.values()), kinds  # each kind about a third
    tokenizer = char_tokenizer([training_text])
    for item in items:
        text = item["prompt"] + item["reference"]
        ids = tokenizer.encode(text)
        assert tokenizer.unk_token_id not in ids and tokenizer.decode(ids) == text


def test_the_task_file_materializes_and_loads(study, tmp_path: Path):
    path = materialize("proofread", tmp_path, study)
    task = load_task(path)
    assert task.name == "proofread" and task.kind == GENERATIVE and len(task.examples) == 150
    assert "exact_match" in task.metrics and "edit_distance" in task.metrics and "token_prob" in task.metrics
    longest = max(len(ex.reference) for ex in task.examples)
    assert task.options.max_new_tokens == longest + 1  # room for the whole answer and its newline
    before = [p.stat().st_mtime_ns for p in (path, path.parent / "proofread.jsonl")]
    assert materialize("proofread", tmp_path, study) == path
    assert [p.stat().st_mtime_ns for p in (path, path.parent / "proofread.jsonl")] == before


def test_more_errors_per_passage_and_bad_options(study):
    options = {**study.data.generator, "n_documents": 100, "proofread_words": 4, "proofread_errors": 2}
    fixes = [line for doc in demo_documents(options, 0) for line in doc.splitlines() if line.startswith("fix ")]
    assert fixes
    for line in fixes:
        misspelled, corrected = parse(line)
        assert len(corrected) == 4 and sum(w != r for w, r in zip(misspelled, corrected)) == 2, line
    with pytest.raises(ConfigError, match=r"data.generator.proofread_errors: 4 must be between 1 and proofread_words \(1\)"):
        parse_options({"proofread_errors": 4})
    with pytest.raises(ConfigError, match="unknown component 'poetry' .*proofread"):
        parse_options({"mixture": {"poetry": 1.0}})


def test_too_few_held_out_questions_is_a_config_error(tmp_path: Path):
    study = load_study(ROOT / "configs" / "demo.yaml")
    study.data.generator = {**study.data.generator, "n_documents": 20, "vocabulary": 8}
    with pytest.raises(ConfigError, match=r"data.generator: only \d+ held-out proofreading questions, 150 needed"):
        materialize("proofread", tmp_path, study)
