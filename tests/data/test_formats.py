"""Text extraction helpers on small hand-made inputs."""

from __future__ import annotations

import gzip
import struct
import warnings
import zlib
from pathlib import Path

from rama.data.formats import (
    osis_to_text,
    paragraphs_to_documents,
    read_r_lazyload,
    read_sword_ztext,
    strip_gutenberg,
)


def test_osis_drops_notes_titles_and_tags() -> None:
    markup = (
        '<title type="main">Psalm 1</title><w lemma="x">Blessed</w> <w>is</w> the man'
        '<note type="crossReference"><reference>Ps 2:1</reference></note> , who walks .'
    )
    assert osis_to_text(markup) == "Blessed is the man, who walks."


def test_gutenberg_header_and_footer_are_removed() -> None:
    text = "licence blah\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\nBody line.\n*** END OF THIS EBOOK ***\nmore"
    assert strip_gutenberg(text) == "Body line."


def test_paragraph_documents_respect_the_size_and_keep_paragraphs_whole() -> None:
    text = "\n\n".join(f"paragraph {i} " + "word " * 20 for i in range(10))
    documents = list(paragraphs_to_documents(text, max_chars=300))
    assert len(documents) == 5
    assert all(doc.count("paragraph") == 2 for doc in documents)


def test_sword_ztext_reads_verses_and_splits_chapters(tmp_path: Path) -> None:
    verses = ['<chapter n="1"/>In the beginning.', "Then light.", '<chapter n="2"/>Next chapter.']
    block = "".join(verses).encode()
    compressed = zlib.compress(block)
    (tmp_path / "nt.bzz").write_bytes(compressed)
    (tmp_path / "nt.bzs").write_bytes(struct.pack("<III", 0, len(compressed), len(block)))
    index, offset = b"", 0
    for verse in verses:
        index += struct.pack("<IIH", 0, offset, len(verse.encode()))
        offset += len(verse.encode())
    (tmp_path / "nt.bzv").write_bytes(struct.pack("<IIH", 0, 0, 0) + index)
    assert list(read_sword_ztext(tmp_path)) == ["In the beginning. Then light.", "Next chapter."]


def write_r_lazyload(folder: Path, variables: dict[str, list[str]]) -> None:
    """An R package's `data/Rdata.rdb` + `.rdx` holding character vectors, as R writes them."""
    import numpy as np
    from rdata.conversion.to_r import convert_python_to_r_data
    from rdata.unparser import unparse_data

    def serialize(value: object) -> bytes:
        return bytes(unparse_data(convert_python_to_r_data(value), file_format="xdr", file_type="rds"))

    blob, index = b"", {}
    for name, lines in variables.items():
        record = zlib.compress(serialize(np.array(lines)))
        record = struct.pack(">I", len(record)) + record
        index[name] = np.array([len(blob), len(record)])
        blob += record
    folder.mkdir(parents=True)
    (folder / "Rdata.rdb").write_bytes(blob)
    (folder / "Rdata.rdx").write_bytes(gzip.compress(serialize({"variables": index})))


def test_r_lazyload_reads_character_vectors_without_the_rdata_warning(tmp_path: Path) -> None:
    novels = {"emma": ["Emma Woodhouse, handsome, clever, and rich.", ""], "persuasion": ["Sir Walter."]}
    write_r_lazyload(tmp_path / "data", novels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the "Unknown file type: assumed RDS" warning would fail here
        assert read_r_lazyload(tmp_path / "data") == novels
