"""The contexts that excite each SAE latent most: the first thing anyone looks at for a feature."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from rama.activations import keep_mask
from rama.errors import InputError
from rama.hooks.model import HookedModel
from rama.sae.base import SAE


@dataclass(frozen=True)
class TopActivation:
    latent: int
    activation: float
    token: str  # the token where the latent fired
    context: str  # a few tokens before it, and the token in [brackets]


def _context(model: HookedModel, tokens: torch.Tensor, position: int, width: int = 8) -> tuple[str, str]:
    before = model.to_string(tokens[max(0, position - width) : position])
    token = model.to_string(tokens[position : position + 1])
    return str(token), f"{before}[{token}]"


def top_activations(
    sae: SAE, model: HookedModel, batches: Iterable[torch.Tensor], latents: list[int], k: int = 5
) -> dict[int, list[TopActivation]]:
    """For each latent, its `k` strongest activations over the batches (special tokens excluded)."""
    if any(not 0 <= latent < sae.cfg.d_sae for latent in latents):
        raise InputError(f"latents must be in 0..{sae.cfg.d_sae - 1}; got {latents}")
    best: dict[int, list[tuple[float, torch.Tensor, int]]] = {latent: [] for latent in latents}
    for tokens in batches:
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, [sae.cfg.hook_name])
            codes = sae.encode(cache[sae.cfg.hook_name].float())[..., latents]  # [batch, pos, n_latents]
        codes = codes * keep_mask(tokens, model.tokenizer, True)[..., None]
        for column, latent in enumerate(latents):
            values, flat = codes[..., column].flatten().topk(k)
            for value, index in zip(values.tolist(), flat.tolist(), strict=True):
                if value > 0:
                    row, position = divmod(index, tokens.shape[1])
                    best[latent].append((value, tokens[row], position))
            best[latent] = sorted(best[latent], key=lambda item: -item[0])[:k]
    return {
        latent: [
            TopActivation(latent, value, *_context(model, row, position)) for value, row, position in found
        ]
        for latent, found in best.items()
    }
