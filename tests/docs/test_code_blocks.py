"""Every code example in the README and docs/ runs, so the docs cannot drift from the library.

A ```python block is marked by an HTML comment on the line just before its fence:
`<!-- run -->` (executed), `<!-- run: slow -->` (executed; needs SmolLM2 or the built-in corpus) or
`<!-- no-run: why -->` (shown only). The blocks of one page run in order in one namespace, so a page
reads like one session, inside a fresh temporary folder (files they write land there).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*(run|run:\s*slow|no-run:[^>]*)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it starts (1-based line of its first code line) and its marker."""

    page: Path
    line: int
    language: str
    marker: str | None  # "run", "slow", "no-run" or None
    code: str


def marker_kind(text: str) -> str:
    """`run`, `slow` (from `run: slow`) or `no-run` (from `no-run: why`)."""
    kind, _, detail = text.partition(":")
    return "slow" if kind == "run" and detail.strip() == "slow" else kind


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, with the marker comment just above each one."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise AssertionError(f"{page.name}:{i + 1}: code fence never closed")
        above = MARKER.match(lines[i - 1].strip()) if i > 0 else None
        marker = None if above is None else marker_kind(above.group(1))
        found.append(Block(page, i + 2, opening.group(1), marker, "\n".join(lines[i + 1 : end])))
        i = end + 1
    return found


def runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.marker in ("run", "slow")]


def page_param(page: Path) -> object:
    marks = [pytest.mark.slow] if any(b.marker == "slow" for b in runnable(page)) else []
    return pytest.param(page, marks=marks, id=str(page.relative_to(ROOT)))


@pytest.mark.parametrize("page", [page_param(p) for p in PAGES if runnable(p)])
def test_the_runnable_blocks_of_a_page_run_in_order(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in runnable(page):
        # Padding with blank lines makes a traceback point at the Markdown line that failed.
        source = "\n" * (block.line - 1) + block.code
        # dont_inherit: run the block as a reader would, not under this file's `from __future__ import
        # annotations` (string annotations break a dataclass defined in a block: its module is not imported)
        exec(compile(source, str(block.page), "exec", dont_inherit=True), namespace)


def test_every_python_block_says_whether_it_runs() -> None:
    unmarked = [
        f"{b.page.relative_to(ROOT)}:{b.line}"
        for page in PAGES
        for b in blocks(page)
        if b.language == "python" and b.marker is None
    ]
    assert not unmarked, f"python blocks without <!-- run --> / <!-- no-run: why -->: {unmarked}"


def test_the_readme_tour_runs_as_written() -> None:
    readme = [b for b in blocks(ROOT / "README.md") if b.language == "python"]
    assert readme, "the README's tour has no python block"
    assert all(b.marker in ("run", "slow") for b in readme), "every python block in the README must run"


def test_the_block_reader_sees_markers_and_line_numbers(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n<!-- run -->\n```python\nx = 1\n```\n\n<!-- run: slow -->\n```python\ny = x\n```\n"
        "<!-- no-run: needs a GPU -->\n```python\nz\n```\n```bash\nls\n```\n",
        encoding="utf-8",
    )
    found = blocks(page)
    assert [(b.line, b.language, b.marker, b.code) for b in found] == [
        (4, "python", "run", "x = 1"),
        (9, "python", "slow", "y = x"),
        (13, "python", "no-run", "z"),
        (16, "bash", None, "ls"),
    ]
    assert [b.code for b in runnable(page)] == ["x = 1", "y = x"]


def build_site(root: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` of the site whose mkdocs.yml lies in `root`, into root/site."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / "mkdocs.yml")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_site_builds_and_a_broken_link_or_anchor_fails_it(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    built = build_site(tmp_path)
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "steering" / "results" / "l6" / "religion.png").is_file()
    index = tmp_path / "docs" / "index.md"
    original = index.read_text(encoding="utf-8")
    for broken in ("[gone](no-such-page.md)", "[gone](sae.md#no-such-anchor)", "![gone](no-such.png)"):
        index.write_text(original + f"\n{broken}\n", encoding="utf-8")
        failed = build_site(tmp_path)
        assert failed.returncode != 0 and "no-such" in failed.stderr, broken
