"""Readers for the formats public-domain texts arrive in: R lazy-load data, SWORD zText, Gutenberg."""

from __future__ import annotations

import gzip
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def read_r_lazyload(data_dir: Path) -> dict[str, list[str]]:
    """Character vectors from an R package's `data/Rdata.rdb` + `.rdx` (needs PyPI's `rdata`).

    The index is a gzipped R serialization mapping each variable to (offset, length) in the .rdb;
    each record there is a 4-byte big-endian length followed by a zlib stream of R serialization.
    """
    index = parse_r(gzip.decompress((data_dir / "Rdata.rdx").read_bytes()))
    blob = (data_dir / "Rdata.rdb").read_bytes()
    out: dict[str, list[str]] = {}
    for name, (offset, length) in index["variables"].items():
        record = blob[int(offset) : int(offset) + int(length)]
        value: Any = parse_r(zlib.decompress(record[4:]))
        if hasattr(value, "dtype") and value.dtype.kind in "US":
            out[str(name)] = [str(line) for line in value]
    return out


def parse_r(serialized: bytes) -> Any:
    """Python values of one R serialization (a headerless RDS stream, as lazy-load files hold).

    rdata warns "Unknown file type: assumed RDS" for each such stream; RDS is right here, so that
    one warning is silenced (it printed during every corpus build) and any other still shows.
    """
    import rdata

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unknown file type: assumed RDS")
        return rdata.conversion.convert(rdata.parser.parse_data(serialized))


_NOTE = re.compile(r"<note\b[^>]*>.*?</note>", re.DOTALL)
_TITLE = re.compile(r"<title\b[^>]*>.*?</title>", re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([,.;:!?)\]’”])")


def osis_to_text(markup: str) -> str:
    """Plain text of an OSIS fragment: notes and titles dropped, tags stripped, spaces folded."""
    text = _TAG.sub(" ", _TITLE.sub(" ", _NOTE.sub(" ", markup)))
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", _SPACE.sub(" ", text)).strip()


def read_sword_ztext(module_dir: Path) -> Iterator[str]:
    """Chapters of a SWORD zText Bible module (`ot`/`nt` .bzs/.bzv/.bzz), as plain text.

    .bzs: 12-byte records (offset, size, uncompressed size) of zlib blocks in .bzz;
    .bzv: 10-byte records (block, offset, size) locating each verse inside its block.
    """
    for testament in ("ot", "nt"):
        if not (module_dir / f"{testament}.bzs").exists():
            continue
        blocks = _sword_blocks(module_dir, testament)
        index = (module_dir / f"{testament}.bzv").read_bytes()
        chapter: list[str] = []
        seen: set[tuple[int, int]] = set()  # commentaries point several verses at one entry
        for i in range(len(index) // 10):
            block, offset, size = struct.unpack("<IIH", index[i * 10 : i * 10 + 10])
            if size == 0 or (block, offset) in seen:
                continue
            seen.add((block, offset))
            verse = blocks[block][offset : offset + size].decode("utf-8", errors="replace")
            if "<chapter " in verse and chapter:
                yield " ".join(chapter)
                chapter = []
            text = osis_to_text(verse)
            if text:
                chapter.append(text)
        if chapter:
            yield " ".join(chapter)


def _sword_blocks(module_dir: Path, testament: str) -> list[bytes]:
    table = (module_dir / f"{testament}.bzs").read_bytes()
    data = (module_dir / f"{testament}.bzz").read_bytes()
    blocks = []
    for i in range(len(table) // 12):
        offset, size, _ = struct.unpack("<III", table[i * 12 : i * 12 + 12])
        blocks.append(zlib.decompress(data[offset : offset + size]))
    return blocks


_GUTENBERG_START = re.compile(r"^\*\*\*\s*START OF.*$|^\*END\*THE SMALL PRINT.*$", re.MULTILINE)
_GUTENBERG_END = re.compile(
    r"^\*\*\*\s*END OF.*$|^End of (the )?Project Gutenberg.*$", re.MULTILINE | re.IGNORECASE
)


def strip_gutenberg(text: str) -> str:
    """The body of a Project Gutenberg file, without its licence header and footer."""
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip()


def paragraphs_to_documents(lines: list[str] | str, max_chars: int = 20_000) -> Iterator[str]:
    """Group text into documents of at most ~max_chars, cut only at paragraph breaks."""
    text = lines if isinstance(lines, str) else "\n".join(lines)
    paragraphs = [_SPACE.sub(" ", p).strip() for p in re.split(r"\n\s*\n", text)]
    current: list[str] = []
    size = 0
    for paragraph in paragraphs:
        if not paragraph:
            continue
        if current and size + len(paragraph) > max_chars:
            yield "\n\n".join(current)
            current, size = [], 0
        current.append(paragraph)
        size += len(paragraph) + 2
    if current:
        yield "\n\n".join(current)
