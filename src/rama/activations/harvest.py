"""Activations from a model over a corpus, for SAEs, feature analysis and probes.

One pass serves several sites; the forward pass stops after the last block any requested site
needs. Special-token positions (BOS, EOS, padding) are excluded by default: SmolLM2's position-0
activations are ~10× larger than the rest and would dominate an SAE's loss.
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

from rama.activations.batches import strided
from rama.data import PackConfig, token_batches
from rama.errors import ConfigError, InputError
from rama.hooks.model import HookedModel

Chunk = dict[str, torch.Tensor]  # {site: [n_rows, d]}, the same token rows for every site
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class HarvestConfig:
    """Which tokens to run through the model, and how to keep their activations."""

    tokens: int = 100_000
    batch_size: int = 8
    context_size: int = 128
    seed: int = 0
    split: str = "train"
    exclude_special_tokens: bool = True
    dtype: str = "float32"  # "float16"/"bfloat16" halve memory for large harvests
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"harvest {name} must be at least 1, not {getattr(self, name)}")
        if self.context_size < 2:
            raise ConfigError(f"harvest context_size must be at least 2, not {self.context_size}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"harvest dtype must be one of {DTYPES}, not {self.dtype!r}")
        if self.split not in ("train", "test", "all"):
            raise ConfigError(f"harvest split must be 'train', 'test' or 'all', not {self.split!r}")

    def model_batches(self) -> int:
        """How many `[batch_size, context_size]` batches `tokens` asks for (at least one)."""
        return max(1, self.tokens // (self.batch_size * self.context_size))


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
    *,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """(tokens `[b, p]`, {site: activations `[b, p, d]`}) batch by batch, with a progress bar when
    `config.progress`. Rank r of `world_size` gets token batches r, r + world_size, ... (see
    `rama.activations.batches`); its first `skip_batches` are passed over without running the model."""
    pack = PackConfig(context_size=config.context_size, seed=config.seed, split=config.split)  # type: ignore[arg-type]
    stream = token_batches(
        model.tokenizer, corpus, batch_size=config.batch_size, config=pack, max_tokens=config.tokens
    )
    layers = stop_layer(model, sites)
    stop = layers if layers < model.cfg.n_layers else None
    mine = -(-(config.model_batches() - rank) // world_size)  # this rank's share, for the bar
    bar = tqdm(total=mine, initial=skip_batches, desc=f"{config.split} activations", unit="batch",
               disable=not config.progress)  # fmt: skip
    try:
        for tokens in itertools.islice(strided(stream, rank, world_size), skip_batches, None):
            with torch.no_grad():
                _, cache = model.run_with_cache(tokens, sites, stop_at_layer=stop)
            bar.update(1)
            yield tokens, {site: cache[site] for site in sites}
    finally:
        bar.close()


def kept_activations(
    model: HookedModel,
    sites: list[str],
    config: HarvestConfig,
    corpus: str | Path | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[Chunk]:
    """`{site: [n_kept_tokens, d]}` per model batch (float32), special-token positions removed."""
    for tokens, acts in batches_with_activations(
        model, sites, config, corpus, rank=rank, world_size=world_size
    ):
        keep = keep_mask(tokens, model.tokenizer, config.exclude_special_tokens)
        yield {site: value[keep.to(value.device)].float() for site, value in acts.items()}


def harvest(
    model: HookedModel,
    sites: list[str],
    config: HarvestConfig | None = None,
    corpus: str | Path | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, torch.Tensor]:
    """`{site: [n_tokens, d]}` for every site, from one pass over the corpus (this rank's stride)."""
    config = config or HarvestConfig()
    sites = model.resolve(sites)
    dtype = getattr(torch, config.dtype)
    chunks: dict[str, list[torch.Tensor]] = {site: [] for site in sites}
    for tokens, acts in batches_with_activations(
        model, sites, config, corpus, rank=rank, world_size=world_size
    ):
        keep = keep_mask(tokens, model.tokenizer, config.exclude_special_tokens)
        for site, value in acts.items():
            chunks[site].append(value[keep.to(value.device)].to(dtype))  # stays on the model's device
    if not chunks[sites[0]]:
        raise InputError(f"the corpus gave no batch of {config.batch_size} × {config.context_size} tokens")
    return {site: torch.cat(parts) for site, parts in chunks.items()}
