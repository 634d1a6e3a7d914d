"""The streaming feature analysis: one pass over tokens, summarising an SAE's latents and the MLP
neurons of the same block side by side, in memory that does not grow with the number of tokens.

Examples come from the site the SAE reads (a transcoder's input site); the neurons are
`blocks.L.mlp.hook_post` of that site's block L. Two analyses over disjoint rows of one token
stream merge (`absorb`) into exactly what one pass over both gives (see `rama.features.summaries`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rama.activations import HarvestConfig, batches_with_activations, keep_mask, stop_layer, strided
from rama.errors import ConfigError, InputError
from rama.features.neighbours import MAX_COFIRING_UNITS, CoFiring
from rama.features.summaries import SummaryConfig, UnitStats
from rama.hooks import HookedModel, HookPoint
from rama.models.sites import block_site
from rama.sae.base import SAE


def setting(default: Any, help: str) -> Any:
    """A config field whose help the CLI shows (`rama.cli.options.add_options` reads `help`)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class BuildConfig:
    """What a feature build analyses and keeps."""

    tokens: int = setting(65_536, "tokens to analyse")
    batch_size: int = setting(8, "rows per forward pass")
    context_size: int = setting(128, "tokens per row")
    top_k: int = setting(20, "top-activating examples kept per unit")
    context_left: int = setting(12, "context tokens shown before an example's token")
    context_right: int = setting(4, "context tokens shown after it")
    quantiles: int = setting(5, "activation quantile groups to sample examples from")
    per_quantile: int = setting(5, "examples shown per quantile group")
    samples_per_bin: int = setting(2, "seeded samples kept per histogram bin during the pass")
    logit_tokens: int = setting(10, "promoted and suppressed tokens kept per latent")
    neighbours: int = setting(10, "nearest and co-firing latents kept per latent")
    neurons: bool = setting(True, "also summarise the block's MLP neurons (mlp.hook_post)")
    seed: int = setting(0, "seed of the corpus order and of the quantile samples")
    progress: bool = setting(True, "show a progress bar")

    def __post_init__(self) -> None:
        for name in ("tokens", "batch_size", "quantiles", "per_quantile", "logit_tokens", "neighbours"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.context_size < 2:
            raise ConfigError(f"context_size must be at least 2, not {self.context_size}")
        self.summary()  # checks the rest

    def summary(self) -> SummaryConfig:
        return SummaryConfig(
            top_k=self.top_k,
            left=self.context_left,
            right=self.context_right,
            samples_per_bin=self.samples_per_bin,
            seed=self.seed,
        )


def neuron_site(model: HookedModel, sae: SAE) -> str | None:
    """`blocks.L.mlp.hook_post` of the block the SAE reads, or None when the model has no such site."""
    layer = HookPoint(sae.cfg.hook_name).layer()
    site = None if layer is None else block_site(layer, "mlp.hook_post")
    return site if site in model.sites else None


Summaries = tuple[UnitStats, UnitStats | None, CoFiring | None]  # (latents, neurons, co-firing)


class FeatureAnalysis:
    """The mergeable state of a pass: latent and neuron summaries, and latent co-firing counts."""

    def __init__(
        self, sae: SAE, config: BuildConfig, neurons: tuple[str, int] | None, device: torch.device | str
    ) -> None:
        """`neurons`: (site, width) of the neurons summarised beside the latents, or None."""
        self.sae = sae
        self.latents = UnitStats(sae.cfg.d_sae, config.summary(), device)
        self.neuron_site = None if neurons is None else neurons[0]
        self.neurons = None if neurons is None else UnitStats(neurons[1], config.summary(), device)
        small = sae.cfg.d_sae <= MAX_COFIRING_UNITS
        self.cofiring = CoFiring(sae.cfg.d_sae, device) if small else None

    def update(
        self, tokens: torch.Tensor, acts: dict[str, torch.Tensor], keep: torch.Tensor, first_row: int
    ) -> None:
        """One batch: `tokens [rows, pos]`, the SAE's input site (and the neuron site) `[rows, pos, d]`."""
        with torch.no_grad():
            codes = self.sae.encode(acts[self.sae.cfg.hook_name].float())  # [rows, pos, d_sae]
        self.latents.update(codes, tokens, keep, first_row)
        if self.cofiring is not None:
            self.cofiring.update(codes[keep.to(codes.device)] > 0)
        if self.neurons is not None and self.neuron_site is not None:
            self.neurons.update(acts[self.neuron_site], tokens, keep, first_row)

    def summaries(self) -> Summaries:
        """What another process needs to merge this pass: the summaries, not the SAE."""
        return self.latents, self.neurons, self.cofiring

    def absorb(self, other: FeatureAnalysis | Summaries) -> None:
        """Merge another pass over other rows of the same stream (or its `summaries()`)."""
        latents, neurons, cofiring = other.summaries() if isinstance(other, FeatureAnalysis) else other
        self.latents.absorb(latents)
        if self.neurons is not None and neurons is not None:
            self.neurons.absorb(neurons)
        if self.cofiring is not None and cofiring is not None:
            self.cofiring.absorb(cofiring)


Tokens = int | torch.Tensor | Iterable[torch.Tensor]


def given_batches(
    model: HookedModel, sites: list[str], tokens: Iterable[torch.Tensor], config: BuildConfig
) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """(tokens, {site: acts}) for given `[rows, pos]` token batches."""
    layers = stop_layer(model, sites)
    stop = layers if layers < model.cfg.n_layers else None
    for batch in tqdm(tokens, desc="features", unit="batch", disable=not config.progress):
        with torch.no_grad():
            _, cache = model.run_with_cache(batch, sites, stop_at_layer=stop)
        yield batch, {site: cache[site] for site in sites}


def numbered_batches(
    model: HookedModel, sites: list[str], tokens: Tokens | None, corpus: str | Path | None, config: BuildConfig,
    rank: int, world_size: int,
) -> Iterator[tuple[int | None, torch.Tensor, dict[str, torch.Tensor]]]:  # fmt: skip
    """(global batch number, tokens, {site: acts}) of this rank's stride; the number is None for an
    iterable of given batches (their rows are numbered by counting)."""
    if tokens is None or isinstance(tokens, int):
        harvest = HarvestConfig(tokens=tokens or config.tokens, batch_size=config.batch_size,
                                context_size=config.context_size, seed=config.seed, progress=config.progress)  # fmt: skip
        stream = batches_with_activations(model, sites, harvest, corpus, rank=rank, world_size=world_size)
        for j, (batch, acts) in enumerate(stream):
            yield rank + j * world_size, batch, acts
    elif isinstance(tokens, torch.Tensor):
        if tokens.ndim != 2:
            raise InputError(f"tokens must be [rows, positions], not shape {tuple(tokens.shape)}")
        mine = list(strided(tokens.split(config.batch_size), rank, world_size))
        for j, (batch, acts) in enumerate(given_batches(model, sites, mine, config)):
            yield rank + j * world_size, batch, acts
    else:
        if world_size != 1:
            raise ConfigError(
                "to split a pass across ranks, give a token count or a [rows, positions] tensor"
            )
        for batch, acts in given_batches(model, sites, tokens, config):
            yield None, batch, acts


def analyse(
    sae: SAE,
    model: HookedModel,
    tokens: Tokens | None = None,
    corpus: str | Path | None = None,
    config: BuildConfig | None = None,
    first_row: int = 0,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> FeatureAnalysis:
    """One pass: over `tokens` (a `[rows, pos]` tensor cut into `batch_size` rows, or an iterable of
    batches) or that many tokens (default `config.tokens`) from `corpus` (a source `rama.data`
    reads; None: the built-in corpus). Rank r of `world_size` takes batches r, r + world_size, …;
    batch b's rows are numbered from `first_row + b × batch_size`, so the ranks' analyses merge
    (`absorb`) into the one-pass result. `first_row` also places a pass over a later part of a stream."""
    config = config or BuildConfig()
    sites = [sae.cfg.hook_name]
    neurons = neuron_site(model, sae) if config.neurons else None
    sites += [neurons] if neurons and neurons != sae.cfg.hook_name else []
    analysis: FeatureAnalysis | None = None
    row = first_row
    for number, batch, acts in numbered_batches(model, sites, tokens, corpus, config, rank, world_size):
        if analysis is None:
            found = (neurons, acts[neurons].shape[-1]) if neurons else None
            analysis = FeatureAnalysis(sae, config, found, next(iter(acts.values())).device)
        row = row if number is None else first_row + number * config.batch_size
        analysis.update(batch, acts, keep_mask(batch, model.tokenizer, True), row)
        row += len(batch)
    if analysis is None:
        raise InputError("no tokens to analyse: the token source gave no batch")
    return analysis
