"""Where training text comes from: local files, or a registered generator (such as the demo's).

Every source yields documents (strings) in a fixed order, streaming: nothing holds the corpus
in memory, so a corpus larger than memory works.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Callable, Iterator

from losslens.errors import DataError
from losslens.lazy import load_entry
from losslens.train.config import DataConfig

# source name -> "module:function" with signature (options: dict, seed: int) -> Iterator[str]
GENERATORS: dict[str, str] = {
    "demo": "losslens.demo.corpus:demo_documents",
}

SUFFIXES = (".txt", ".jsonl", ".parquet")


def corpus_files(cfg: DataConfig) -> list[Path]:
    """The corpus files named by ``data.paths`` (globs expanded, sorted), checked to exist and be non-empty."""
    files: list[Path] = []
    for i, pattern in enumerate(cfg.paths):
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not matches:
            raise DataError(f"data.paths[{i}]: no file matches {pattern!r}")
        for m in matches:
            p = Path(m)
            if not p.is_file():
                raise DataError(f"data.paths[{i}]: corpus file {p} not found")
            if p.suffix not in SUFFIXES:
                raise DataError(f"{p}: unsupported corpus format {p.suffix!r} (use {', '.join(SUFFIXES)})")
            if p.stat().st_size == 0:
                raise DataError(f"{p}: corpus file is empty")
            files.append(p)
    return files


def _iter_txt(path: Path) -> Iterator[str]:
    """Paragraphs (blank-line separated) of a text file, read line by line."""
    lines: list[str] = []
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            for line in f:
                if line.strip():
                    lines.append(line)
                elif lines:
                    yield "".join(lines).rstrip("\n")
                    lines = []
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if lines:
        yield "".join(lines).rstrip("\n")


def _iter_jsonl(path: Path, field: str) -> Iterator[str]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start} of the line)") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            text = record.get(field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise DataError(f"{path}:{lineno}: expected a string field {field!r}")
            yield text


def _iter_parquet(path: Path, field: str) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file ({str(e).strip().splitlines()[0]})") from None
    schema = pf.schema_arrow
    if field not in schema.names:
        raise DataError(f"{path}: no column {field!r} (columns: {', '.join(schema.names)})")
    kind = schema.field(field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"{path}: column {field!r} holds {kind}, not text (data.text_field)")
    try:
        for batch in pf.iter_batches(columns=[field], batch_size=4096):
            for text in batch.column(0).to_pylist():
                if text:
                    yield text
    except (pa.ArrowException, OSError) as e:  # a file whose footer reads but whose pages are damaged
        raise DataError(f"{path}: cannot read column {field!r} ({str(e).strip().splitlines()[0]})") from None


def _generator(name: str) -> Callable[[dict, int], Iterator[str]]:
    if name not in GENERATORS:
        raise DataError(f"data.source: unknown source {name!r} (known: files, {', '.join(GENERATORS)})")
    return load_entry(GENERATORS[name])


def iter_documents(cfg: DataConfig, seed: int) -> Iterator[str]:
    """All documents of the corpus, in a fixed order."""
    if cfg.source != "files":
        yield from _generator(cfg.source)(cfg.generator, seed)
        return
    for path in corpus_files(cfg):
        if path.suffix == ".txt":
            yield from _iter_txt(path)
        elif path.suffix == ".jsonl":
            yield from _iter_jsonl(path, cfg.text_field)
        else:
            yield from _iter_parquet(path, cfg.text_field)
