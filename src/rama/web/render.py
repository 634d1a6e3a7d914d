"""What the dashboard's pages show, gathered from a feature store and rendered by Jinja2 templates.

Shared by the server (`rama.web.app`) and the static export (`rama.web.static_site`); the two differ
only in their `Links` (absolute routes against relative file names). Templates autoescape, and token
strings only ever reach a page through `token_html`, which escapes each piece before it marks the
whitespace, so a corpus holding markup renders as text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median
from typing import Any
from urllib.parse import urlencode

import jinja2
import torch
from markupsafe import Markup, escape

from rama.features.store import FeatureStore

KINDS = {"feature": "latent", "neuron": "neuron"}  # route word -> store kind
ROUTE_OF = {kind: route for route, kind in KINDS.items()}
WHITESPACE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}
COMPARED = ("density", "mean", "max")  # the stats a neuron page sets beside the latents' medians


class Links:
    """URLs of the server's routes; `rama.web.static_site` overrides them with relative file names."""

    static_site = False

    def index(self) -> str:
        return "/"

    def unit(self, kind: str, id: int) -> str | None:
        """The page of a unit, or None when there is no such page (the static site's left-out ids)."""
        return f"/{ROUTE_OF[kind]}/{id}"

    def static(self, name: str) -> str:
        return f"/static/{name}"

    def listing(self, kind: str, sort: str, order: str, label: str, page: int) -> str:
        """The index page with these settings (the static site has one unsorted page)."""
        return "/?" + urlencode({"kind": kind, "sort": sort, "order": order, "label": label, "page": page})


def environment() -> jinja2.Environment:
    """Templates from the package, every value autoescaped, with the dashboard's filters."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("rama.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(token_html=token_html, shade=shade, num=number, pct=percent)
    env.globals.update(tokens_html=tokens_html)
    return env


def render_page(env: jinja2.Environment, template: str, links: Links, meta: dict[str, Any],
                **values: Any) -> str:  # fmt: skip
    """One page: the template with the links, the store's meta and the page's own values."""
    return env.get_template(template).render(links=links, meta=meta, **values)


def token_html(text: str) -> Markup:
    """A token's text, escaped, with whitespace shown as dim markers (␣ ↵ ⇥) and "" as ∅. Escaping
    comes first and never makes whitespace, so the markers are the only markup added."""
    if text == "":
        return Markup('<span class="ws">∅</span>')
    html = str(escape(text))
    for char, marker in WHITESPACE.items():
        if char in html:
            html = html.replace(char, f'<span class="ws">{marker}</span>')
    return Markup(html)


def tokens_html(strings: list[str], acts: list[float], top: float, focus: int | None = None) -> Markup:
    """A window of tokens, each shaded by its activation (`shade`) with the value as its hover title;
    the example's own token (`focus`) outlined. Built here rather than in a template macro: a feature
    page has hundreds of tokens, and this is several times faster."""
    cells = []
    for index, (text, value) in enumerate(zip(strings, acts, strict=True)):
        kind = "tok focus" if index == focus else "tok"
        cells.append(
            f'<span class="{kind}" style="{shade(value, top)}" title="{value:.4g}">{token_html(text)}</span>'
        )
    return Markup('<span class="tokens">' + "".join(cells) + "</span>")


def shade(value: float, top: float) -> str:
    """The CSS background of a token whose activation is `value` on a unit whose largest is `top`:
    white to orange for positive values, white to blue for negative ones (a neuron's GELU/SiLU)."""
    share = 0.0 if not top or not math.isfinite(value) else min(abs(value) / abs(top), 1.0)
    if value >= 0:
        red, green, blue = 255, round(255 - 115 * share), round(255 - 255 * share)
    else:
        red, green, blue = round(255 - 175 * share), round(255 - 105 * share), 255
    return f"background-color: rgb({red}, {green}, {blue})"


def number(value: float | None, digits: int = 3) -> str:
    """Short display of a float: `digits` significant digits, '–' for None or NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}g}"


def percent(value: float | None) -> str:
    """A density as a percentage with 3 significant digits."""
    return "–" if value is None else f"{100 * value:.3g}%"


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    count: int
    low: float
    high: float


def histogram(counts: list[int], edges: list[float], width: int = 560, height: int = 120) -> dict[str, Any]:
    """SVG geometry for the non-empty span of a unit's log-binned histogram: bars, the x range
    (activation) at both ends and the tallest count (the y axis label)."""
    filled = [i for i, c in enumerate(counts) if c]
    if not filled:
        return {"bars": [], "width": width, "height": height, "low": 0.0, "high": 0.0, "top": 0, "ticks": []}
    first, last = filled[0], filled[-1]
    bounds = [0.0, *edges, math.inf]  # bin i spans [bounds[i], bounds[i + 1])
    top = max(counts)
    step = width / (last - first + 1)
    bars = [
        Bar(x=(i - first) * step, y=height - height * counts[i] / top, width=max(step - 1, 1),
            height=height * counts[i] / top, count=counts[i], low=bounds[i], high=bounds[i + 1])
        for i in range(first, last + 1)
    ]  # fmt: skip
    return {"bars": bars, "width": width, "height": height, "low": bounds[first], "high": bounds[last + 1],
            "top": top, "ticks": ticks(bars, width)}  # fmt: skip


def ticks(bars: list[Bar], width: float) -> list[tuple[float, float]]:
    """(x, activation) axis ticks: both ends and every bar edge at a power of ten between them that
    is at least 40 px from either end."""
    inner = [
        (bar.x, bar.low)
        for bar in bars[1:]
        if bar.low > 0 and is_decade(bar.low) and 40 <= bar.x <= width - 40  # labels must not overlap
    ]
    end = bars[-1].high if math.isfinite(bars[-1].high) else bars[-1].low
    return [(0.0, bars[0].low), *inner, (float(width), end)]


def is_decade(value: float) -> bool:
    """A power of ten, to float32 precision (the store's bin edges are float32)."""
    exponent = math.log10(value)
    return abs(exponent - round(exponent)) < 1e-6


def medians(store: FeatureStore, kind: str = "latent") -> dict[str, float | None]:
    """The median density, mean and max over every unit of `kind` (None when there are none)."""
    rows = store.connection.execute("SELECT density, mean, max FROM units WHERE kind = ?", (kind,)).fetchall()
    return {name: (median(row[name] for row in rows) if rows else None) for name in COMPARED}


def unit_page(store: FeatureStore, kind: str, id: int) -> dict[str, Any] | None:
    """Everything a feature or neuron page shows, or None for an id not in the store."""
    unit = store.unit(id, kind)
    if unit is None:
        return None
    quantiles: dict[int, list[dict[str, Any]]] = {}
    for example in store.examples(id, "quantile", kind):
        quantiles.setdefault(example["bin"], []).append(example)
    for group in quantiles.values():
        group.sort(key=lambda e: -e["activation"])  # strongest first within a group, like the top examples
    page: dict[str, Any] = {
        "kind": kind,
        "route": ROUTE_OF[kind],
        "id": id,
        "unit": unit,
        "histogram": histogram(unit["histogram"], store.meta["histogram_edges"]),
        "top": store.examples(id, "top", kind),
        "quantiles": [quantiles[group] for group in sorted(quantiles)],
        "logits": {},
        "neighbours": {},
        "explanations": store.explanations(id, kind),
    }
    if kind == "latent":
        page["logits"] = {
            via: {d: store.logits(id, via, d) for d in ("promoted", "suppressed")}
            for via in ("norm", "direct")
        }
        page["neighbours"] = {
            m: [
                {**n, "label": label_of(store, n["other"])}
                for n in store.neighbours(id, m)
                if m == "cosine" or n["value"] > 0  # a Jaccard of 0 is no co-firing at all
            ]
            for m in ("cosine", "cofiring")
        }
    return page


def label_of(store: FeatureStore, id: int) -> str:
    unit = store.unit(id)
    return "" if unit is None else str(unit["label"])


def api_unit(page: dict[str, Any]) -> dict[str, Any]:
    """The JSON form of a unit page: the store's rows as they are, no rendering geometry."""
    keep = ("kind", "id", "unit", "top", "quantiles", "logits", "neighbours", "explanations")
    return {key: page[key] for key in keep}


def latent_maxima(store: FeatureStore) -> torch.Tensor:
    """`[d_sae]` every latent's largest activation in the store (0 for one that never fired)."""
    maxima = torch.zeros(int(store.meta["d_sae"]))
    for row in store.units_page("latent", limit=-1):  # SQLite: LIMIT -1 is no limit
        maxima[row["id"]] = row["max"]
    return maxima
