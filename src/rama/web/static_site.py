"""`write_static_site`: the dashboard's pages for a feature store as plain files (index.html, one page
per latent and the stylesheet) with relative links, so the folder works from file:// with no server
and no network. The same templates as the server render them, without its forms."""

from __future__ import annotations

import shutil
from pathlib import Path

from tqdm import tqdm

from rama.atomic import staged_folder
from rama.errors import ConfigError
from rama.features.store import FeatureStore
from rama.web import render
from rama.web.app import STATIC


class FileLinks(render.Links):
    """Relative links between the site's files; `prefix` leads from a page back to the site's root.
    A unit left out of the site (by `limit`, or any neuron) has no link."""

    static_site = True

    def __init__(self, prefix: str, latents: set[int]) -> None:
        self.prefix = prefix
        self.latents = latents

    def index(self) -> str:
        return f"{self.prefix}index.html"

    def unit(self, kind: str, id: int) -> str | None:
        return f"{self.prefix}features/{id}.html" if kind == "latent" and id in self.latents else None

    def static(self, name: str) -> str:
        return f"{self.prefix}static/{name}"


def write_static_site(
    store_path: str | Path, out_dir: str | Path, limit: int | None = None, overwrite: bool = False,
    progress: bool = True,
) -> Path:  # fmt: skip
    """Write the site for the store's latents (the first `limit` by id, or all) into `out_dir`, which
    appears in one rename when every page is written; a non-empty `out_dir` is refused unless `overwrite`."""
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1 (or None for every latent), not {limit}")
    env = render.environment()
    with FeatureStore(store_path) as store, staged_folder(out_dir, overwrite=overwrite) as staging:
        total = store.count()
        rows = store.units_page("latent", "id", limit=total if limit is None else min(limit, total))
        ids = {row["id"] for row in rows}
        (staging / "features").mkdir()
        shutil.copytree(STATIC, staging / "static")
        root, nested = FileLinks("", ids), FileLinks("../", ids)
        index = render.render_page(env, "index.html", root, store.meta, rows=rows, total=len(rows),
                                   kind="latent", sort="id", order="asc", label="", page=1, pages=1)  # fmt: skip
        (staging / "index.html").write_text(index, encoding="utf-8")
        for row in tqdm(rows, desc="feature pages", unit="page", disable=not progress):
            page = render.unit_page(store, "latent", row["id"])
            html = render.render_page(env, "unit.html", nested, store.meta, page=page, writable=False)
            (staging / "features" / f"{row['id']}.html").write_text(html, encoding="utf-8")
    return Path(out_dir)
