"""Activations from a model over a corpus, for training and evaluating SAEs.

One pass serves several sites (and so several SAEs); the forward pass stops after the last block
any requested site needs. Special-token positions (BOS, EOS, padding) are excluded by default:
SmolLM2's position-0 activations are ~10× larger than the rest and would dominate the loss.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rama.data import PackConfig, token_batches
from rama.hooks.model import HookedModel


@dataclass(frozen=True)
class HarvestConfig:
    tokens: int = 100_000
    batch_size: int = 8
    context_size: int = 128
    seed: int = 0
    split: str = "train"
    exclude_special_tokens: bool = True
    dtype: str = "float32"  # "float16"/"bfloat16" halve memory for large harvests
    progress: bool = True


def stop_layer(model: HookedModel, sites: list[str]) -> int:
    """The number of blocks that must run to reach every site."""
    layers = []
    for site in sites:
        match = re.match(r"blocks\.(\d+)\.", site)
        if match:
            layers.append(int(match.group(1)))
        elif site.startswith("hook_") and "embed" in site:
            layers.append(0)
        else:  # final norm or logits
            return model.cfg.n_layers
    return max(layers) + 1


def keep_mask(tokens: torch.Tensor, tokenizer: Any, exclude_special: bool) -> torch.Tensor:
    """`[batch, pos]` True where the position's activation should be used."""
    if not exclude_special:
        return torch.ones_like(tokens, dtype=torch.bool)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    mask = torch.ones_like(tokens, dtype=torch.bool)
    for token_id in special:
        mask &= tokens != token_id
    return mask


def batches_with_activations(
    model: HookedModel,
    sites: list[str],
    config: HarvestConfig,
    corpus: str | Path | None = None,
    skip_batches: int = 0,
) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """(tokens `[b, p]`, {site: activations `[b, p, d]`}) batch by batch; the first `skip_batches`
    token batches are passed over without running the model (resuming a harvest)."""
    pack = PackConfig(context_size=config.context_size, seed=config.seed, split=config.split)  # type: ignore[arg-type]
    stream = token_batches(
        model.tokenizer, corpus, batch_size=config.batch_size, config=pack, max_tokens=config.tokens
    )
    layers = stop_layer(model, sites)
    stop = layers if layers < model.cfg.n_layers else None
    for tokens in itertools.islice(stream, skip_batches, None):
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, sites, stop_at_layer=stop)
        yield tokens, {site: cache[site] for site in sites}


def harvest(
    model: HookedModel,
    sites: list[str],
    config: HarvestConfig | None = None,
    corpus: str | Path | None = None,
) -> dict[str, torch.Tensor]:
    """`{site: [n_tokens, d]}` for every site, from one pass over the corpus."""
    config = config or HarvestConfig()
    sites = model.resolve(sites)
    dtype = getattr(torch, config.dtype)
    chunks: dict[str, list[torch.Tensor]] = {site: [] for site in sites}
    total = max(1, config.tokens // (config.batch_size * config.context_size))
    bar = tqdm(total=total, desc=f"harvest {len(sites)} site(s)", unit="batch", disable=not config.progress)
    for tokens, acts in batches_with_activations(model, sites, config, corpus):
        keep = keep_mask(tokens, model.tokenizer, config.exclude_special_tokens)
        for site, value in acts.items():
            chunks[site].append(value[keep.to(value.device)].to(dtype))  # stays on the model's device
        bar.update(1)
    bar.close()
    if not chunks[sites[0]]:
        raise ValueError(f"the corpus gave no batch of {config.batch_size} × {config.context_size} tokens")
    return {site: torch.cat(parts) for site, parts in chunks.items()}
