"""Every page of the dashboard against the store it reads, under a real uvicorn server: the numbers a
page shows are the store's, the colour scale and histogram are what a hand computation gives, and a
label saved through the form is in the store."""

from __future__ import annotations

import re
import shutil
import sqlite3
import statistics
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from web_helpers import elements, served, shared_store

from rama.features import FeatureStore
from rama.web.render import WHITESPACE, histogram, number, percent, shade, token_html


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, store) of a server without a model, index pages of 10 units."""
    db, _, _ = shared_store(tmp_path_factory)
    with served(db, page_size=10) as url:
        yield url, db


@pytest.fixture
def copy(site: tuple[str, Path], tmp_path: Path) -> Path:
    """A copy of the module's store, for tests that write labels."""
    return Path(shutil.copy(site[1], tmp_path / "copy.db"))


def busiest(db: Path, kind: str = "latent") -> int:
    """The unit that fired most (so it has every kind of example)."""
    with FeatureStore(db) as store:
        return max(store.units_page(kind, limit=1000), key=lambda row: row["count"])["id"]


def test_the_colour_scale_and_number_formats_by_hand() -> None:
    assert shade(0.0, 2.0) == "background-color: rgb(255, 255, 255)"
    assert shade(2.0, 2.0) == shade(5.0, 2.0) == "background-color: rgb(255, 140, 0)"  # clipped at the max
    assert shade(1.0, 2.0) == "background-color: rgb(255, 198, 128)"  # 255 - 57.5, 255 - 127.5, rounded
    assert shade(-2.0, 2.0) == "background-color: rgb(80, 150, 255)"  # negative: white to blue
    assert shade(1.0, 0.0) == "background-color: rgb(255, 255, 255)"  # a unit that never fired
    assert (number(0.0123456), number(None), percent(0.0125)) == ("0.0123", "–", "1.25%")
    assert str(token_html(" a<b>\n")) == '<span class="ws">␣</span>a&lt;b&gt;<span class="ws">↵</span>'


def test_histogram_geometry_by_hand() -> None:
    counts = [0, 2, 0, 4, 0, 0]  # bins: (0, 1), [1, 10), [10, 100), [100, 1000), [1000, 1e4), [1e4, inf)
    shape = histogram(counts, [1.0, 10.0, 100.0, 1000.0, 1e4], width=300, height=100)
    assert [(b.count, b.low, b.high) for b in shape["bars"]] == [
        (2, 1.0, 10.0),
        (0, 10.0, 100.0),
        (4, 100.0, 1000.0),
    ]
    assert [b.x for b in shape["bars"]] == [0.0, 100.0, 200.0]  # three bins share 300 px
    assert [b.height for b in shape["bars"]] == [50.0, 0.0, 100.0]  # against the tallest, 4
    assert (shape["low"], shape["high"], shape["top"]) == (1.0, 1000.0, 4)
    assert shape["ticks"] == [(0.0, 1.0), (100.0, 10.0), (200.0, 100.0), (300, 1000.0)]  # ends and decades
    assert histogram([0, 0], [1.0])["bars"] == []
    crowded = histogram([3, 1, 0, 1], [0.001, 0.01, 0.1], width=90)  # bars of 22.5 px: 0.001 too near 0
    assert crowded["ticks"] == [(0.0, 0.0), (45.0, 0.01), (90.0, 0.1)]


def test_index_lists_sorts_filters_and_pages(site: tuple[str, Path]) -> None:
    url, db = site
    with FeatureStore(db) as store:
        by_density = [r["id"] for r in store.units_page("latent", "density", descending=True, limit=100)]
        every = {r["id"]: r for r in store.units_page("latent", limit=100)}
    first = httpx.get(f"{url}/?sort=density&order=desc")
    cells = elements(first.text, "td", "id")
    assert [int(c["text"]) for c in cells] == by_density[:10]
    densities = [c["text"] for c in elements(first.text, "td", "num")][::3]
    assert densities == [percent(every[i]["density"]) for i in by_density[:10]]
    last = httpx.get(f"{url}/?sort=density&order=desc&page=3")
    assert [int(c["text"]) for c in elements(last.text, "td", "id")] == by_density[20:24]
    assert "page 3 of 3" in last.text
    neurons = httpx.get(f"{url}/?kind=neuron&sort=max&order=asc")
    assert "64 neurons" in neurons.text and 'href="/neuron/' in neurons.text
    assert httpx.get(f"{url}/?page=4").status_code == httpx.get(f"{url}/?page={10**30}").status_code == 404
    for bad in ("sort=nonsense", "order=up", "kind=head", "page=0", "page=two"):
        answer = httpx.get(f"{url}/?{bad}")
        assert answer.status_code == 400 and "Cannot do that" in answer.text, bad


def test_feature_page_shows_the_stores_numbers(site: tuple[str, Path]) -> None:
    url, db = site
    latent = busiest(db)
    with FeatureStore(db) as store:
        unit, top = store.unit(latent), store.examples(latent, "top")
        quantile = store.examples(latent, "quantile")
        logits = {
            (v, d): store.logits(latent, v, d) for v in ("norm", "direct") for d in ("promoted", "suppressed")
        }
        near = store.neighbours(latent, "cosine")
    assert unit is not None and top
    html = httpx.get(f"{url}/feature/{latent}").text
    assert elements(html, "span", "value")[0]["text"] == percent(unit["density"])
    tables = elements(html, "table", "examples")
    assert len(tables) == 1 + len({e["bin"] for e in quantile})
    shown = [c["text"] for c in elements(html, "td", "num")][: len(top)]  # the top examples come first
    assert shown == [number(e["activation"], 4) for e in top]
    tokens = elements(html, "span", "tok")
    window = tokens[: len(top[0]["tokens"])]  # the first example's context, token by token
    assert [t["title"] for t in window] == [f"{a:.4g}" for a in top[0]["activations"]]
    assert [t["style"] for t in window] == [shade(a, unit["max"]) for a in top[0]["activations"]]
    assert [t["text"] for t in window] == [shown_text(s) for s in top[0]["tokens"]]
    focus = [t for t in tokens[: len(window)] if "focus" in t["class"].split()]
    assert len(focus) == 1 and focus[0]["title"] == f"{top[0]['activation']:.4g}"
    bars = [t for t in _titles(html) if t.endswith(" tokens")]
    assert sum(int(b.split(": ")[1].split()[0]) for b in bars) == unit["count"]
    for (via, direction), rows in logits.items():
        table = next(
            t
            for t in elements(html, "table", "logits")
            if t["data-via"] == via and t["data-direction"] == direction
        )
        assert [float(v) for v in _numbers(table["text"])] == pytest.approx(
            [r["value"] for r in rows], abs=1e-3
        )
    links = [a["href"] for a in _anchors(html) if a["href"].startswith("/feature/")]
    assert [f"/feature/{n['other']}" for n in near] == links[: len(near)]


def shown_text(token: str) -> str:
    """A token as a page shows it: whitespace as markers, the empty string as ∅."""
    return "".join(WHITESPACE.get(c, c) for c in token) or "∅"


def _titles(html: str) -> list[str]:
    """The text of every <title> (the histogram's bars: "low to high: N tokens")."""
    return [t["text"] for t in elements(html.replace("<title>", '<title class="t">'), "title", "t")]


def _numbers(text: str) -> list[str]:
    """The signed numbers (`+0.049`) in a table's text."""
    return re.findall(r"[+-]\d+\.\d+", text)


def _anchors(html: str) -> list[dict[str, str]]:
    return elements(html.replace("<a href", '<a class="link" href'), "a", "link")


def test_neuron_page_compares_with_the_latents_medians(site: tuple[str, Path]) -> None:
    url, db = site
    neuron = busiest(db, "neuron")
    with FeatureStore(db) as store:
        unit = store.unit(neuron, "neuron")
        latents = store.units_page("latent", limit=1000)
        neurons = store.units_page("neuron", limit=1000)
    assert unit is not None
    html = httpx.get(f"{url}/neuron/{neuron}").text
    assert f"Neuron {neuron}" in html and "blocks.1.mlp.hook_post" in html
    table = elements(html, "table", "compare")[0]["text"].split()
    middle = sorted(r["max"] for r in latents)
    by_hand = (middle[11] + middle[12]) / 2  # 24 latents: the mean of the 12th and 13th
    assert table[table.index("max") + 1 : table.index("max") + 4] == [
        number(unit["max"], 4),
        number(by_hand, 4),
        number(statistics.median(r["max"] for r in neurons), 4),
    ]
    assert "label-editor" not in html and "logits" not in html  # neurons have no decoder of their own
    assert httpx.get(f"{url}/api/neuron/{neuron}").json()["unit"]["max"] == unit["max"]


def test_api_is_the_store_as_json(site: tuple[str, Path]) -> None:
    url, db = site
    with FeatureStore(db) as store:
        top, cofiring = store.examples(3, "top"), store.neighbours(3, "cofiring")
        dead = next(row["id"] for row in store.units_page(limit=100) if row["count"] == 0)
    data = httpx.get(f"{url}/api/feature/3").json()
    assert data["top"] == top and all(n["value"] > 0 for n in cofiring)
    assert [(n["other"], n["value"]) for n in data["neighbours"]["cofiring"]] == [
        (n["other"], n["value"]) for n in cofiring
    ]
    never = httpx.get(f"{url}/api/feature/{dead}").json()  # a latent that never fired co-fires with none
    assert never["top"] == [] and never["neighbours"]["cofiring"] == []
    assert "never fired with another latent" in httpx.get(f"{url}/feature/{dead}").text
    missing = httpx.get(f"{url}/api/feature/24")
    assert missing.status_code == 404 and "0 … 23" in missing.json()["error"]


def test_search_by_id_label_and_promoted_token(copy: Path) -> None:
    db = copy
    with FeatureStore(db, writable=True) as store:
        store.set_label(7, "Markup & angle brackets")
        store.set_label(9, "markup, again")
        token = store.logits(11, "norm", "promoted")[0]
        promoters = {row["unit"] for row in store.by_promoted_token(token["token"])}
    with served(db) as url:
        by_id = httpx.get(f"{url}/search", params={"q": "12"}).text
        assert '<a href="/feature/12">12</a>' in by_id
        by_label = httpx.get(f"{url}/search", params={"q": "MARKUP"}).text
        assert hits(by_label, "results-label") == [7, 9]
        assert "Markup &amp; angle brackets" in by_label
        by_token = httpx.get(f"{url}/search", params={"q": token["token"]}).text
        assert set(hits(by_token, "results-token")) >= promoters and 11 in promoters
        nothing = httpx.get(f"{url}/search", params={"q": "no such thing"}).text
        assert "No label contains" in nothing and "By id" not in nothing  # not a number: no id section
        assert "this store has latents 0 … 23" in httpx.get(f"{url}/search", params={"q": "99"}).text


def hits(html: str, table: str) -> list[int]:
    """The latents listed in one of the search page's result tables."""
    found = elements(html, "table", table)
    rows = elements(html, "tr", "hit")
    return [int(r["data-latent"]) for r in rows if found and r["text"] in found[0]["text"]]


def test_label_round_trip_through_the_form(copy: Path) -> None:
    db = copy
    with served(db) as url:
        saved = httpx.post(f"{url}/feature/4/label", data={"label": "  <i>italic</i> & more "})
        assert saved.status_code == 303 and saved.headers["location"] == "/feature/4"
        page = httpx.get(f"{url}/feature/4").text
        assert 'value="&lt;i&gt;italic&lt;/i&gt; &amp; more"' in page and "<i>italic" not in page
        listed = httpx.get(f"{url}/?label=italic").text
        assert [int(c["text"]) for c in elements(listed, "td", "id")] == [4]
        assert httpx.post(f"{url}/feature/99/label", data={"label": "x"}).status_code == 404
    with FeatureStore(db) as store:
        assert store.unit(4) is not None and store.unit(4)["label"] == "<i>italic</i> & more"  # type: ignore[index]
    db.chmod(0o444)
    try:
        with served(db) as url:
            page = httpx.get(f"{url}/feature/4").text
            assert "read-only" in page and "label-editor" not in page
            refused = httpx.post(f"{url}/feature/4/label", data={"label": "new"})
            assert refused.status_code == 403 and "read-only" in refused.text
    finally:
        db.chmod(0o644)
    assert (
        sqlite3.connect(db).execute("SELECT label FROM units WHERE id = 4").fetchone()[0]
        == "<i>italic</i> & more"
    )
