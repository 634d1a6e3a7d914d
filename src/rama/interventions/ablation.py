"""Ablation: replace a site, some heads, or some positions with zeros, a mean over reference data,
or the activations of other inputs (resampling). Each returns a `(site, hook)` pair."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from rama.hooks.core import HookPoint
from rama.hooks.model import HookedModel
from rama.interventions.steering import Hook

HEAD_SITES = ("attn.hook_z", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_result")


def head_dim(site: str) -> int | None:
    """Which dimension indexes heads at this site (None when it has none)."""
    if site.endswith(HEAD_SITES):
        return 2  # [batch, pos, head, d]
    if site.endswith(("attn.hook_pattern", "attn.hook_attn_scores")):
        return 1  # [batch, head, q, k]
    return None


def _check_heads(model: HookedModel, site: str, heads: Sequence[int] | None) -> list[int] | None:
    if heads is None:
        return None
    dim = head_dim(site)
    if dim is None:
        raise ValueError(f"{site!r} has no head dimension; ablate heads at blocks.L.attn.hook_z")
    count = model.site_shape(site)[dim]
    bad = [h for h in heads if not 0 <= h < count]
    if bad:
        raise IndexError(f"heads {bad} do not exist at {site!r} (it has {count})")
    return list(heads)


def _replace(site: str, heads: list[int] | None, source: Callable[[torch.Tensor], torch.Tensor]) -> Hook:
    dim = head_dim(site)

    def hook(activation: torch.Tensor, point: HookPoint) -> torch.Tensor:
        replacement = source(activation).to(activation.dtype)
        if heads is None:
            return replacement.expand_as(activation).clone()
        out = activation.clone()
        index = [slice(None)] * activation.ndim
        index[dim or 0] = heads  # type: ignore[call-overload]
        out[tuple(index)] = replacement.expand_as(activation)[tuple(index)]
        return out

    return site, hook


def zero_ablation(model: HookedModel, site: str, heads: Sequence[int] | None = None) -> Hook:
    model.resolve(site)
    return _replace(site, _check_heads(model, site, heads), torch.zeros_like)


def mean_ablation(
    model: HookedModel,
    site: str,
    reference: torch.Tensor | Sequence[str],
    heads: Sequence[int] | None = None,
    per_position: bool = False,
) -> Hook:
    """Replace with the mean over the reference batch (and over positions unless `per_position`,
    which needs the reference and the ablated input to line up position by position)."""
    chosen = _check_heads(model, site, heads)
    with torch.no_grad():
        _, cache = model.run_with_cache(reference, names=site)
    acts = cache[site]
    if cache.attention_mask is not None and not per_position and head_dim(site) != 1:
        weights = cache.attention_mask.to(acts.dtype).view(
            *cache.attention_mask.shape, *[1] * (acts.ndim - 2)
        )
        mean = (acts * weights).sum((0, 1), keepdim=True) / weights.sum((0, 1), keepdim=True)
    else:
        mean = (
            acts.mean(0, keepdim=True)
            if per_position or head_dim(site) == 1
            else acts.mean((0, 1), keepdim=True)
        )

    def source(activation: torch.Tensor) -> torch.Tensor:
        if per_position and mean.shape[1] != activation.shape[1]:
            raise ValueError(
                f"per-position mean ablation at {site!r}: reference has {mean.shape[1]} positions, "
                f"the input {activation.shape[1]}"
            )
        return mean

    return _replace(site, chosen, source)


def resample_ablation(
    model: HookedModel,
    site: str,
    sources: torch.Tensor | Sequence[str],
    heads: Sequence[int] | None = None,
    seed: int = 0,
) -> Hook:
    """Replace each row's activation with that of a randomly drawn row of `sources` (same shape)."""
    chosen = _check_heads(model, site, heads)
    with torch.no_grad():
        _, cache = model.run_with_cache(sources, names=site)
    pool = cache[site]
    generator = torch.Generator().manual_seed(seed)

    def source(activation: torch.Tensor) -> torch.Tensor:
        if pool.shape[1:] != activation.shape[1:]:
            raise ValueError(
                f"resampling at {site!r} needs sources shaped like the input: {tuple(pool.shape[1:])} "
                f"vs {tuple(activation.shape[1:])}"
            )
        rows = torch.randint(0, pool.shape[0], (activation.shape[0],), generator=generator)
        return pool[rows]

    return _replace(site, chosen, source)
