"""Find SAE latents for a concept: the latents whose activation mass falls mostly on the concept's
words. A first, simple search; feature dashboards come later."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from rama.hooks.model import HookedModel
from rama.sae.base import SAE
from rama.sae.harvest import keep_mask


@dataclass(frozen=True)
class LatentMatch:
    latent: int
    share: float  # fraction of the latent's activation mass on concept tokens
    fires: int  # tokens it fired on
    max_activation: float


def concept_token_ids(model: HookedModel, words: Sequence[str]) -> torch.Tensor:
    """Ids of every vocabulary token that, stripped and lower-cased, starts with one of `words`
    (at least 3 characters of it, so "sea" matches "seas" and " Sea" but not "s")."""
    prefixes = tuple(w.strip().lower() for w in words if w.strip())
    if not prefixes:
        raise ValueError("give at least one concept word")
    vocab = model.tokenizer.convert_ids_to_tokens(list(range(model.cfg.d_vocab)))
    hits = []
    for index, piece in enumerate(vocab):
        text = model.tokenizer.convert_tokens_to_string([piece]).strip().lower() if piece else ""
        if len(text) >= 3 and text.startswith(prefixes):
            hits.append(index)
    return torch.tensor(hits, dtype=torch.long)


def find_latents(
    sae: SAE,
    model: HookedModel,
    batches: Iterable[torch.Tensor],
    words: Sequence[str],
    top: int = 5,
    min_fires: int = 20,
    skip_positions: int = 2,
) -> list[LatentMatch]:
    """Latents ranked by the share of their activation mass that lands on the concept's tokens.
    The first `skip_positions` tokens of each context are left out: they see little or no context and
    carry outsized activations in many models (SmolLM2's layer-12 norm is 25,000 at BOS and 199 at
    position 1 against ≈ 135 after), which would otherwise dominate the peaks."""
    concept = concept_token_ids(model, words)
    on = torch.zeros(sae.cfg.d_sae)
    total = torch.zeros(sae.cfg.d_sae)
    fires = torch.zeros(sae.cfg.d_sae)
    peak = torch.zeros(sae.cfg.d_sae)
    for tokens in batches:
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, [sae.cfg.hook_name])
            codes = sae.encode(cache[sae.cfg.hook_name].float())  # [batch, pos, d_sae]
        keep = keep_mask(tokens, model.tokenizer, True).clone()
        keep[:, :skip_positions] = False
        codes = (codes * keep[..., None]).flatten(0, 1)
        is_concept = torch.isin(tokens.flatten(), concept)
        on += codes[is_concept].sum(0)
        total += codes.sum(0)
        fires += (codes > 0).sum(0)
        peak = torch.maximum(peak, codes.max(0).values)
    share = torch.where(fires >= min_fires, on / total.clamp_min(1e-9), torch.zeros_like(on))
    best = share.topk(top)
    return [
        LatentMatch(int(i), float(s), int(fires[i]), float(peak[i]))
        for s, i in zip(best.values.tolist(), best.indices.tolist(), strict=True)
    ]


def latents_by_contrast(
    sae: SAE, model: HookedModel, positive: Sequence[str], negative: Sequence[str], top: int = 5
) -> list[tuple[int, float]]:
    """Latents most active on `positive` texts relative to `negative` ones: `[(latent, difference of
    mean activation)]`. Finds topic features where `find_latents` finds token detectors. Position 0
    of each text (an attention sink) is left out."""

    def mean_codes(texts: Sequence[str]) -> torch.Tensor:
        if not texts:
            raise ValueError("need at least one text on each side of the contrast")
        rows = []
        for text in texts:
            with torch.no_grad():
                _, cache = model.run_with_cache(text, [sae.cfg.hook_name])
                rows.append(sae.encode(cache[sae.cfg.hook_name][0, 1:].float()))
        return torch.cat(rows).mean(0)

    difference = mean_codes(positive) - mean_codes(negative)
    best = difference.topk(top)
    return [(int(i), float(v)) for v, i in zip(best.values.tolist(), best.indices.tolist(), strict=True)]
