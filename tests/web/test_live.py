"""/text and /steer run the real model and SAE: the activations a page shows equal a direct forward
pass and encode, the steered continuation equals `generate` under `set_features`, and each
continuation's perplexity equals a hand computation from the model's log-probabilities."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from web_helpers import SITE, elements, served, shared_store

from rama.features import FeatureStore
from rama.hooks.model import HookedModel
from rama.interventions import set_features
from rama.sae import SAE

TEXT = "v7 v30 v31 v8 v55 v9 v12"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, HookedModel, SAE]]:
    db, model, sae = shared_store(tmp_path_factory)
    with served(db, model, sae) as url:
        yield url, db, model, sae


def direct_codes(model: HookedModel, sae: SAE, text: str) -> torch.Tensor:
    """`[pos, d_sae]` latent activations of `text` after a BOS, the BOS position zeroed."""
    tokens = model.to_tokens(text, prepend_bos=True)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names=[SITE])
        codes = sae.encode(cache[SITE][0])
    codes[0] = 0
    return codes


def test_text_page_shows_each_tokens_latents(live: tuple[str, Path, HookedModel, SAE]) -> None:
    url, db, model, sae = live
    codes = direct_codes(model, sae, TEXT)
    html = httpx.get(f"{url}/text", params={"text": TEXT}).text
    clickable = elements(html, "a", "tok")
    assert [a["text"] for a in clickable] == ["<s>", *TEXT.split()] and clickable[3]["href"] == "#token-3"
    peaks = codes.max(0).values
    with FeatureStore(db) as store:  # ranked by the peak here over the latent's max in the store
        store_max = torch.tensor([store.unit(i)["max"] for i in range(sae.cfg.d_sae)])  # type: ignore[index]
    relative = peaks / torch.maximum(store_max, peaks).clamp_min(1e-12)
    expected = [int(i) for i in relative.argsort(descending=True, stable=True)[:8] if peaks[i] > 0]
    rows = elements(html.replace("<tr data-latent", '<tr class="row" data-latent'), "tr", "row")
    assert [int(r["data-latent"]) for r in rows] == expected
    shaded = elements(html, "table", "text-latents")[0]
    first = [s for s in elements(html, "span", "tok") if s.get("title")][
        : codes.shape[0]
    ]  # the first row's tokens
    assert [float(s["title"]) for s in first] == pytest.approx(
        codes[:, expected[0]].tolist(), rel=1e-3, abs=1e-6
    )
    assert shaded["text"]
    for position in (0, 3):
        panel = next(p for p in elements(html, "div", "token-panel") if p["id"] == f"token-{position}")
        strongest = codes[position].topk(5)
        want = [int(i) for v, i in zip(strongest.values, strongest.indices, strict=True) if v > 0]
        assert panel["data-latents"] == ",".join(map(str, want))
        if not want:
            assert "No latent fires here" in panel["text"]
    assert 'href="/feature/' in html


def perplexity_by_hand(model: HookedModel, ids: list[int], start: int) -> float:
    """exp of the mean negative log-probability of ids[start:], one position at a time."""
    with torch.no_grad():
        log_probs = model(torch.tensor([ids]))[0].log_softmax(-1)
    losses = [-float(log_probs[p - 1, ids[p]]) for p in range(start, len(ids))]
    return math.exp(sum(losses) / len(losses))


def test_steering_matches_generate_with_set_features(live: tuple[str, Path, HookedModel, SAE]) -> None:
    url, _, model, sae = live
    form = {
        "prompt": "v7 v8 v9",
        "latent_0": "3",
        "value_0": "40",
        "latent_2": "10",
        "value_2": "-5",
        "new_tokens": "6",
    }
    html = httpx.post(f"{url}/steer", data=form).text
    prompt = model.to_tokens(form["prompt"], prepend_bos=True)
    hook = set_features(model, sae, [3, 10], [40.0, -5.0], positions=slice(1, None))
    for name, hooks in (("plain", []), ("steered", [hook])):
        out = model.generate(prompt, 6, fwd_hooks=hooks)
        assert isinstance(out, torch.Tensor)
        block = next(d for d in elements(html, "div", "continuation") if d["id"] == name)
        assert model.to_string(out[0, prompt.shape[1] :]) in block["text"]
        shown = float(block["text"].split("perplexity")[1].split()[0])
        assert shown == pytest.approx(perplexity_by_hand(model, out[0].tolist(), prompt.shape[1]), rel=1e-3)
    plain, steered = (
        next(d for d in elements(html, "div", "continuation") if d["id"] == n) for n in ("plain", "steered")
    )
    assert plain["text"] != steered["text"].replace("With", "Without")  # the edit changed the text


def test_without_a_model_the_live_pages_say_what_to_do(
    tmp_path: Path, live: tuple[str, Path, HookedModel, SAE]
) -> None:
    with served(live[1]) as url:
        for answer in (
            httpx.get(f"{url}/text", params={"text": TEXT}),
            httpx.post(f"{url}/steer", data={"prompt": "v7"}),
        ):
            assert answer.status_code == 200 and "rama serve DB --sae SAE_DIR" in answer.text
            assert "disabled" in answer.text
