"""The dashboard driven end to end in a real headless Chromium (Debian's, through Playwright): the index and
its sorting, a feature page's shaded tokens and logit table, search, typed text with clickable tokens, and
one steering generation. Every page's screenshot lands in tests/web/artifacts/ (printed at the end).

Expected values come from the store (`FeatureStore`) and from running the tiny model and SAE directly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from web_helpers import MARKUP, served, tiny_store

from rama.features import FeatureStore
from rama.hooks.model import HookedModel
from rama.interventions import set_features
from rama.sae import SAE

SHOWN_WHITESPACE = {" ": "␣", "\n": "↵", "\t": "⇥"}  # how pages show whitespace inside a token


@dataclass(frozen=True)
class Site:
    url: str
    db: Path
    model: HookedModel
    sae: SAE

    def store(self) -> FeatureStore:
        return FeatureStore(self.db)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    db, model, sae = tiny_store(tmp_path_factory.mktemp("browser"))
    with served(db, model, sae) as url:
        yield Site(url, db, model, sae)


def shown(token: str) -> str:
    return "".join(SHOWN_WHITESPACE.get(c, c) for c in token) or "∅"


def shot(page: Any, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def column_ids(page: Any) -> list[int]:
    return [int(text) for text in page.locator("table.units tbody td.id").all_inner_texts()]


def test_index_lists_every_latent_and_sorts_by_density(page: Any, site: Site, screenshots: Path) -> None:
    with site.store() as store:
        total = store.count()
        by_id = [row["id"] for row in store.units_page("latent", "id", False, 0, 1000)]
        by_density = [row["id"] for row in store.units_page("latent", "density", False, 0, 1000)]
        densest = [row["id"] for row in store.units_page("latent", "density", True, 0, 1000)]
    page.goto(site.url + "/")
    assert column_ids(page) == by_id and len(by_id) == total == 24
    shot(page, screenshots, "index")
    page.click("th.density a")
    page.wait_for_url(re.compile(r"sort=density"))
    assert column_ids(page) == by_density
    page.click("th.density a")  # a second click reverses the order
    page.wait_for_url(re.compile(r"order=desc"))
    assert column_ids(page) == densest
    assert by_density != by_id  # sorting changed the order, so the check above means something
    shot(page, screenshots, "index-by-density")


def token_cells(page: Any, table: str) -> list[dict[str, Any]]:
    """title and computed background colour of every shaded token in the first `table`."""
    return (
        page.locator(table)
        .first.locator(".tok")
        .evaluate_all(
            "spans => spans.map(s => ({title: s.title, text: s.innerText, focus: s.classList.contains('focus'),"
            " colour: getComputedStyle(s).backgroundColor}))"
        )
    )


def rgb(css: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", css)[:3])


def test_feature_page_shades_tokens_by_activation_and_lists_the_stores_logits(
    page: Any, site: Site, screenshots: Path
) -> None:
    with site.store() as store:
        latent = store.units_page("latent", "max", True, 0, 1)[0]["id"]
        top = store.examples(latent)
        peak = store.unit(latent)["max"]
        logits = {(via, d): [r["token"] for r in store.logits(latent, via=via, direction=d)]
                  for via in ("norm", "direct") for d in ("promoted", "suppressed")}  # fmt: skip
    page.goto(f"{site.url}/feature/{latent}")
    assert page.locator("h1").inner_text().startswith(f"Feature {latent}")
    cells = token_cells(page, "table.examples")
    first = top[0]
    assert [c["text"] for c in cells[: len(first["tokens"])]] == [shown(t) for t in first["tokens"]]
    for cell, value in zip(cells, first["activations"], strict=False):
        assert cell["title"] == f"{value:.4g}"  # hovering shows the activation
        red, _, blue = rgb(cell["colour"])
        # the scale runs linearly from white (0) to the strongest colour (the latent's max activation)
        assert red == 255 and abs(blue - round(255 * (1 - value / peak))) <= 1, (value, cell["colour"])
    focus = [c for c in cells[: len(first["tokens"])] if c["focus"]]
    assert len(focus) == 1 and float(focus[0]["title"]) == pytest.approx(peak, rel=1e-3)
    assert rgb(focus[0]["colour"]) == min((rgb(c["colour"]) for c in cells), key=lambda c: c[1] + c[2])
    page.hover("table.examples .tok.focus >> nth=0")
    assert page.locator("table.examples .tok.focus").first.get_attribute("title") == f"{peak:.4g}"
    for (via, direction), tokens in logits.items():
        table = page.locator(f'table.logits[data-via="{via}"][data-direction="{direction}"]')
        assert table.locator("td.token").all_inner_texts() == [shown(t) for t in tokens]
    assert page.locator(".legend").count() >= 1
    shot(page, screenshots, "feature")


def test_markup_in_the_corpus_renders_as_text(page: Any, site: Site) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    with site.store() as store:
        script = next(u for u in range(24) if any(MARKUP[3] in e["tokens"] for e in store.examples(u)))
    page.goto(f"{site.url}/feature/{script}")
    assert MARKUP[3] in page.locator("table.examples").first.inner_text()
    assert page.locator("table.examples script, table.examples b").count() == 0 and not dialogs


def test_search_by_label_and_by_promoted_token(page: Any, site: Site, screenshots: Path) -> None:
    with site.store() as store:
        token = store.logits(2, via="norm", direction="promoted")[0]["token"]
        promoters = [row["unit"] for row in store.by_promoted_token(token)]
    page.goto(f"{site.url}/feature/7")  # label a latent in the page's editor, then find it
    page.fill(".label-editor input[name=label]", "curly brackets")
    page.click(".label-editor button")
    page.wait_for_url(re.compile(r"/feature/7$"))
    assert page.locator("h1 .label-title").inner_text() == "curly brackets"
    page.goto(f"{site.url}/search")
    page.fill("input[name=q]", "CURLY")
    page.press("input[name=q]", "Enter")
    page.wait_for_url(re.compile(r"q=CURLY"))
    assert page.locator("table.results-label td a").all_inner_texts() == ["7"]
    shot(page, screenshots, "search-label")
    page.fill("input[name=q]", token.strip())
    page.press("input[name=q]", "Enter")
    page.wait_for_load_state()
    found = [int(t) for t in page.locator("table.results-token td:first-child a").all_inner_texts()]
    assert 2 in found and set(promoters) <= set(found)
    shot(page, screenshots, "search-token")


def strongest_latents(site: Site, text: str, position: int, per_token: int = 5) -> list[int]:
    """The latents firing most at `position` of `text` (BOS first), run here directly."""
    tokens = site.model.to_tokens(text, prepend_bos=True)
    with torch.no_grad():
        _, cache = site.model.run_with_cache(tokens, names=[site.sae.cfg.hook_name])
        codes = site.sae.encode(cache[site.sae.cfg.hook_name][0].float())[position]  # [d_sae]
    best = codes.topk(per_token)
    return [int(i) for v, i in zip(best.values, best.indices, strict=True) if v > 0]


def test_typed_text_click_a_token_then_open_a_latent(page: Any, site: Site, screenshots: Path) -> None:
    text = "v12 v40 v7 v33 v51 v8"
    page.goto(f"{site.url}/text")
    page.fill("textarea[name=text]", text)
    page.click(".text-form button")
    page.wait_for_selector("#tok-3")
    shot(page, screenshots, "text")
    page.click("#tok-3")
    panel = page.locator("#token-3")
    assert panel.is_visible()
    ids = [int(t) for t in panel.locator("td a").all_inner_texts()]
    assert ids == strongest_latents(site, text, 3) and ids
    shot(page, screenshots, "text-token")
    panel.locator("td a").first.click()
    page.wait_for_url(re.compile(rf"/feature/{ids[0]}$"))
    assert page.locator("h1").inner_text().startswith(f"Feature {ids[0]}")


def perplexity(model: HookedModel, ids: torch.Tensor, start: int) -> float:
    with torch.no_grad():
        logits = model(ids[None])[0]  # [pos, vocab]
    log_probs = logits.float().log_softmax(-1)[start - 1 : -1]  # [new, vocab]
    return math.exp(-log_probs.gather(1, ids[start:, None]).mean().item())


def test_steering_shows_both_continuations_side_by_side(page: Any, site: Site, screenshots: Path) -> None:
    prompt, latent, value, new = "v9 v21 v30", 5, 40.0, 8
    page.goto(f"{site.url}/steer")
    page.fill("textarea[name=prompt]", prompt)
    page.fill("input[name=latent_0]", str(latent))
    page.fill("input[name=value_0]", str(value))
    page.fill("input[name=new_tokens]", str(new))
    page.click(".steer-form button")
    page.wait_for_selector("#steered .perplexity")
    shot(page, screenshots, "steer")
    ids = site.model.to_tokens(prompt, prepend_bos=True)
    hook = set_features(site.model, site.sae, [latent], [value], positions=slice(1, None))
    for name, hooks in (("plain", []), ("steered", [hook])):
        out = site.model.generate(ids, new, fwd_hooks=hooks)[0]  # [prompt + new]
        column = page.locator(f"#{name}")
        assert column.locator(".new").inner_text() == site.model.to_string(out[ids.shape[1] :]).strip()
        shown_ppl = float(column.locator(".perplexity").inner_text())
        assert shown_ppl == pytest.approx(perplexity(site.model, out, ids.shape[1]), rel=1e-3)
    plain, steered = (page.locator(f"#{n}").bounding_box() for n in ("plain", "steered"))
    assert plain and steered and steered["x"] >= plain["x"] + plain["width"] - 1
    assert abs(steered["y"] - plain["y"]) < 5  # side by side, not stacked
