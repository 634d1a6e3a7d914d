"""Documents from anywhere: the built-in corpus, local .txt/.jsonl/.parquet files or folders, and
Hugging Face datasets (streamed, when online). Every reader streams: memory does not grow with size."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

from rama.data.corpus import builtin_corpus
from rama.data.formats import paragraphs_to_documents
from rama.errors import RamaError

BUILTIN_NAMES = ("builtin", "english-pd", "english-pd-v1")
SUFFIXES = (".txt", ".jsonl", ".parquet")


class CorpusError(RamaError, ValueError):
    """A corpus that cannot be read as given (missing, empty, wrong format or field)."""


def iter_documents(
    source: str | Path | None = None, *, text_field: str = "text", shuffle_seed: int | None = None
) -> Iterator[str]:
    """Documents as strings. `shuffle_seed` shuffles document order where the source allows it
    (.jsonl files and folders); streaming sources keep their order."""
    if source is None or str(source) in BUILTIN_NAMES:
        source = builtin_corpus()
    text = str(source)
    if text.startswith("hf:"):
        yield from _hf_documents(text[3:], text_field)
        return
    path = Path(text).expanduser()
    if not path.exists():
        raise CorpusError(
            f"corpus {text!r} does not exist. Give a .txt, .jsonl or .parquet file, a folder of them, "
            f"'hf:<dataset>' (online), or None for the built-in English corpus."
        )
    files = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise CorpusError(f"folder {text!r} holds no {', '.join(SUFFIXES)} files")
    yielded = False
    for file in files:
        for document in _file_documents(file, text_field, shuffle_seed):
            yielded = True
            yield document
    if not yielded:
        raise CorpusError(f"corpus {text!r} is empty: no text found")


def _file_documents(path: Path, text_field: str, shuffle_seed: int | None) -> Iterator[str]:
    if path.suffix == ".jsonl":
        yield from _jsonl_documents(path, text_field, shuffle_seed)
    elif path.suffix == ".parquet":
        yield from _parquet_documents(path, text_field)
    elif path.suffix == ".txt":
        yield from _txt_documents(path)
    else:
        raise CorpusError(f"{str(path)!r}: unsupported file type {path.suffix!r}; use one of {SUFFIXES}")


def _txt_documents(path: Path, max_chars: int = 20_000) -> Iterator[str]:
    """Paragraph groups of a text file, read line by line."""
    buffer: list[str] = []
    size = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            buffer.append(line)
            size += len(line)
            if size >= max_chars and not line.strip():
                yield from paragraphs_to_documents("".join(buffer), max_chars)
                buffer, size = [], 0
    if buffer:
        yield from paragraphs_to_documents("".join(buffer), max_chars)


def _jsonl_documents(path: Path, text_field: str, shuffle_seed: int | None) -> Iterator[str]:
    offsets = _line_offsets(path)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(offsets)
    with open(path, "rb") as handle:
        for number, offset in enumerate(offsets):
            handle.seek(offset)
            line = handle.readline().strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise CorpusError(f"{str(path)!r}: line {number + 1} is not JSON ({error})") from error
            if text_field not in record:
                raise CorpusError(
                    f"{str(path)!r}: a record has no {text_field!r} field (keys: {list(record)})"
                )
            yield str(record[text_field])


def _line_offsets(path: Path) -> list[int]:
    offsets, position = [], 0
    with open(path, "rb") as handle:
        for line in handle:
            offsets.append(position)
            position += len(line)
    return offsets


def _parquet_documents(path: Path, text_field: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as error:
        raise CorpusError("reading .parquet needs pyarrow: pip install 'rama-interp[data]'") from error
    table = pq.ParquetFile(path)
    if text_field not in table.schema_arrow.names:
        raise CorpusError(f"{str(path)!r} has no column {text_field!r} (columns: {table.schema_arrow.names})")
    for batch in table.iter_batches(columns=[text_field], batch_size=1024):
        for value in batch.column(0).to_pylist():
            if value:
                yield str(value)


def _hf_documents(spec: str, text_field: str) -> Iterator[str]:
    """`name`, `name:config` or `name:config@split` from the Hugging Face hub, streamed."""
    try:
        import datasets
    except ImportError as error:
        raise CorpusError(
            "'hf:' corpora need the datasets package: pip install 'rama-interp[data]'"
        ) from error
    name, _, split = spec.partition("@")
    name, _, config = name.partition(":")
    stream = datasets.load_dataset(name, config or None, split=split or "train", streaming=True)
    for record in stream:
        yield str(record[text_field])
