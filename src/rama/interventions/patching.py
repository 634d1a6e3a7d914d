"""Activation patching (Meng et al. 2022; Wang et al. 2022): run one input, overwrite one component
with its value from another input, measure the metric — for every component of a sweep.

Denoising patches clean activations into the corrupted run (what suffices to restore behaviour);
noising patches corrupted activations into the clean run (what is necessary). Many patches run as
one batch: copy k of the target input carries patch k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from rama.hooks.core import HookPoint
from rama.hooks.model import HookedModel
from rama.interventions.logit_metrics import normalised_score

Metric = Callable[[torch.Tensor], torch.Tensor]  # logits [batch, pos, vocab] -> scalar
SWEEPS = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "heads": "blocks.{layer}.attn.hook_z",
}


@dataclass(frozen=True)
class Patch:
    """One component: a site, and optionally one position and/or one head of it."""

    site: str
    position: int | None = None
    head: int | None = None


@dataclass
class PatchResult:
    """Metric after each patch, `values` shaped by `dims` (e.g. `("layer", "pos")`), with labels."""

    values: torch.Tensor
    dims: tuple[str, ...]
    labels: dict[str, list[str]]
    clean: float
    corrupted: float
    direction: str
    sweep: str = ""

    def normalised(self) -> torch.Tensor:
        """0 = the corrupted run's metric, 1 = the clean run's."""
        return normalised_score(self.values, self.clean, self.corrupted)


def _select(activation: torch.Tensor, patch: Patch) -> tuple[slice | int, ...]:
    index: list[slice | int] = [slice(None)] * activation.ndim
    if patch.position is not None:
        index[1] = patch.position
    if patch.head is not None:
        index[2] = patch.head
    return tuple(index)


def run_patches(
    model: HookedModel,
    target: torch.Tensor,
    source_cache: dict[str, torch.Tensor],
    patches: Sequence[Patch],
    metric: Metric,
    max_batch: int = 64,
) -> torch.Tensor:
    """Metric for each patch `[len(patches)]`: the target run with that one component taken from the source."""
    rows = target.shape[0]
    per_chunk = max(1, max_batch // rows)
    values: list[torch.Tensor] = []
    for start in range(0, len(patches), per_chunk):
        chunk = list(patches[start : start + per_chunk])
        hooks = _chunk_hooks(chunk, source_cache, rows)
        with torch.no_grad():
            logits = model.run_with_hooks(target.repeat(len(chunk), 1), hooks)
        values.extend(metric(part) for part in logits.split(rows))
    return torch.stack([v.detach().float().reshape(()) for v in values])


def _chunk_hooks(
    chunk: list[Patch], source_cache: dict[str, torch.Tensor], rows: int
) -> list[tuple[str, Callable[[torch.Tensor, HookPoint], torch.Tensor]]]:
    by_site: dict[str, list[tuple[int, Patch]]] = {}
    for copy, patch in enumerate(chunk):
        by_site.setdefault(patch.site, []).append((copy, patch))

    def make(site: str, items: list[tuple[int, Patch]]) -> Callable[[torch.Tensor, HookPoint], torch.Tensor]:
        source = source_cache[site]

        def hook(activation: torch.Tensor, point: HookPoint) -> torch.Tensor:
            out = activation.clone()
            for copy, patch in items:
                part = out[copy * rows : (copy + 1) * rows]
                index = _select(part, patch)
                part[index] = source[index].to(part.dtype)
            return out

        return hook

    return [(site, make(site, items)) for site, items in by_site.items()]


def _check_pair(clean: torch.Tensor, corrupted: torch.Tensor) -> None:
    if clean.shape != corrupted.shape:
        raise ValueError(
            f"clean and corrupted inputs must have the same shape, position by position; got "
            f"{tuple(clean.shape)} and {tuple(corrupted.shape)}"
        )


def activation_patching(
    model: HookedModel,
    clean: torch.Tensor | str | list[str],
    corrupted: torch.Tensor | str | list[str],
    metric: Metric,
    sweep: str = "resid_pre",
    direction: str = "denoising",
    layers: Sequence[int] | None = None,
    max_batch: int = 64,
) -> PatchResult:
    """Sweep `resid_pre|resid_post|attn_out|mlp_out` over layers × positions, or `heads` over
    layers × heads (each head's `hook_z` at every position)."""
    if sweep not in SWEEPS:
        raise ValueError(f"unknown sweep {sweep!r}; choose one of {', '.join(SWEEPS)}")
    if direction not in ("denoising", "noising"):
        raise ValueError(f"direction must be 'denoising' or 'noising'; got {direction!r}")
    clean_tokens, corrupted_tokens = model.to_tokens(clean), model.to_tokens(corrupted)
    _check_pair(clean_tokens, corrupted_tokens)
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    sites = [SWEEPS[sweep].format(layer=layer) for layer in layers]
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean_tokens, names=sites)
        corrupted_logits, corrupted_cache = model.run_with_cache(corrupted_tokens, names=sites)
    assert clean_logits is not None and corrupted_logits is not None
    source, target = (
        (clean_cache, corrupted_tokens) if direction == "denoising" else (corrupted_cache, clean_tokens)
    )
    inner = model.cfg.n_heads if sweep == "heads" else clean_tokens.shape[1]
    patches = [
        Patch(site, head=i) if sweep == "heads" else Patch(site, position=i)
        for site in sites
        for i in range(inner)
    ]
    values = run_patches(model, target, dict(source), patches, metric, max_batch).view(len(layers), inner)
    inner_dim = "head" if sweep == "heads" else "pos"
    inner_labels = (
        [str(h) for h in range(inner)] if sweep == "heads" else _position_labels(model, clean_tokens)
    )
    return PatchResult(
        values=values,
        dims=("layer", inner_dim),
        labels={"layer": [str(layer) for layer in layers], inner_dim: inner_labels},
        clean=float(metric(clean_logits)),
        corrupted=float(metric(corrupted_logits)),
        direction=direction,
        sweep=sweep,
    )


def _position_labels(model: HookedModel, tokens: torch.Tensor) -> list[str]:
    words = model.to_str_tokens(tokens[0])
    return [f"{i}:{w}" for i, w in enumerate(words)]
