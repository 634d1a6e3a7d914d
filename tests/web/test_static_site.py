"""`write_static_site`: an index and one page per latent with relative links that all resolve to files
in the folder, no network address anywhere, the store's numbers on the pages, written in one rename."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from web_helpers import elements, shared_store

from rama.errors import ConfigError, OutputError
from rama.features import FeatureStore
from rama.web import write_static_site
from rama.web.render import number


def links(html: str) -> list[str]:
    return re.findall(r'(?:href|src)="([^"]*)"', html)


def test_every_link_resolves_to_a_file_in_the_site(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    db, _, _ = shared_store(tmp_path_factory)
    out = write_static_site(db, tmp_path / "site", progress=False)
    pages = sorted(out.rglob("*.html"))
    assert [p.relative_to(out).as_posix() for p in pages] == sorted(
        ["index.html", *(f"features/{i}.html" for i in range(24))]
    )
    assert (out / "static" / "style.css").is_file()
    for page in pages:
        html = page.read_text()
        assert "http://" not in html and "https://" not in html and "<form" not in html
        for link in links(html):
            assert not link.startswith("/"), (page, link)  # relative, so file:// works
            target = (page.parent / link.split("#")[0]).resolve()
            assert target.is_file() and out.resolve() in target.parents, (page, link)
    with FeatureStore(db) as store:
        top = store.examples(5)
    html = (out / "features" / "5.html").read_text()
    assert [c["text"] for c in elements(html, "td", "num")][: len(top)] == [
        number(e["activation"], 4) for e in top
    ]
    index = (out / "index.html").read_text()
    assert [c["text"] for c in elements(index, "td", "id")] == [str(i) for i in range(24)]


def test_limit_overwrite_and_refusals(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    db, _, _ = shared_store(tmp_path_factory)
    out = write_static_site(db, tmp_path / "site", limit=5, progress=False)
    assert sorted(p.name for p in (out / "features").iterdir()) == [f"{i}.html" for i in range(5)]
    for page in out.rglob("*.html"):  # links to the latents left out are plain ids, not broken links
        for link in links(page.read_text()):
            assert (page.parent / link).resolve().is_file(), (page, link)
    with pytest.raises(OutputError, match="already holds files"):
        write_static_site(db, out, progress=False)
    write_static_site(db, out, limit=2, overwrite=True, progress=False)
    assert sorted(p.name for p in (out / "features").iterdir()) == ["0.html", "1.html"]
    with pytest.raises(ConfigError, match="limit"):
        write_static_site(db, tmp_path / "other", limit=0)
    assert not (tmp_path / "other").exists() and not list(tmp_path.glob(".site.*"))
