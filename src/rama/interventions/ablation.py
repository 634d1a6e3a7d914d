"""Ablation: replace a site, some heads, or some positions with zeros, a mean over reference data,
or the activations of other inputs (resampling). Each returns a `(site, hook)` pair.

Which axis of a site indexes heads comes from the model (`HookedModel.head_axis`), never from the
site's name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from rama.errors import ConfigError, InputError
from rama.hooks.core import HookPoint
from rama.hooks.model import HookedModel
from rama.interventions.steering import Hook


def check_heads(model: HookedModel, site: str, heads: Sequence[int] | None) -> list[int] | None:
    """The heads to ablate at `site`, each checked to exist there (None: the whole site)."""
    if heads is None:
        return None
    axis = model.head_axis(site)
    if axis is None:
        raise ConfigError(f"{site!r} has no head dimension; ablate heads at blocks.L.attn.hook_z")
    count = model.site_shape(site)[axis]
    bad = [h for h in heads if not 0 <= h < count]
    if bad:
        raise ConfigError(f"heads {bad} do not exist at {site!r} (it has {count})")
    return list(heads)


def _replace(
    site: str, heads: list[int] | None, axis: int | None, source: Callable[[torch.Tensor], torch.Tensor]
) -> Hook:
    def hook(activation: torch.Tensor, point: HookPoint) -> torch.Tensor:
        replacement = source(activation).to(activation.dtype)
        if heads is None:
            return replacement.expand_as(activation).clone()
        out = activation.clone()
        index: list[slice | list[int]] = [slice(None)] * activation.ndim
        index[axis or 0] = heads
        out[tuple(index)] = replacement.expand_as(activation)[tuple(index)]
        return out

    return site, hook


def zero_ablation(model: HookedModel, site: str, heads: Sequence[int] | None = None) -> Hook:
    """Replace the site (or the chosen heads of it) with zeros."""
    model.resolve(site)
    return _replace(site, check_heads(model, site, heads), model.head_axis(site), torch.zeros_like)


def group_means(acts: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """`[batch, ...]`: each row replaced by the mean of the rows in its group (`groups [batch]`)."""
    labels, inverse = torch.unique(groups, return_inverse=True)
    means = torch.stack([acts[groups == label].mean(0) for label in labels])
    return means[inverse]


def mean_ablation(
    model: HookedModel,
    site: str,
    reference: torch.Tensor | Sequence[str],
    heads: Sequence[int] | None = None,
    per_position: bool = False,
    groups: torch.Tensor | None = None,
) -> Hook:
    """Replace with the mean over the reference batch (and over positions unless `per_position`,
    which needs the reference and the ablated input to line up position by position).

    `groups [batch]` (e.g. the IOI template of each prompt) takes the mean within each group, per
    position, and gives row r of the ablated input its group's mean: the input must be the
    reference's rows, in order (the IOI paper's per-template mean ablation)."""
    chosen = check_heads(model, site, heads)
    axis = model.head_axis(site)
    with torch.no_grad():
        _, cache = model.run_with_cache(reference, names=site)
    acts = cache[site]
    if groups is not None:
        if groups.shape != (acts.shape[0],):
            raise InputError(
                f"groups must hold one label per reference row ({acts.shape[0]}); got {tuple(groups.shape)}"
            )
        mean = group_means(acts, groups)
    elif cache.attention_mask is not None and not per_position and axis != 1:
        weights = cache.attention_mask.to(acts.dtype).view(
            *cache.attention_mask.shape, *[1] * (acts.ndim - 2)
        )
        mean = (acts * weights).sum((0, 1), keepdim=True) / weights.sum((0, 1), keepdim=True)
    else:
        mean = acts.mean(0, keepdim=True) if per_position or axis == 1 else acts.mean((0, 1), keepdim=True)

    def source(activation: torch.Tensor) -> torch.Tensor:
        if groups is not None and mean.shape != activation.shape:
            raise InputError(
                f"group mean ablation at {site!r}: the input {tuple(activation.shape)} must be the "
                f"reference's rows {tuple(mean.shape)}"
            )
        if per_position and mean.shape[1] != activation.shape[1]:
            raise InputError(
                f"per-position mean ablation at {site!r}: reference has {mean.shape[1]} positions, "
                f"the input {activation.shape[1]}"
            )
        return mean

    return _replace(site, chosen, axis, source)


def resample_ablation(
    model: HookedModel,
    site: str,
    sources: torch.Tensor | Sequence[str],
    heads: Sequence[int] | None = None,
    seed: int = 0,
) -> Hook:
    """Replace each row's activation with that of a randomly drawn row of `sources` (same shape)."""
    chosen = check_heads(model, site, heads)
    with torch.no_grad():
        _, cache = model.run_with_cache(sources, names=site)
    pool = cache[site]
    generator = torch.Generator().manual_seed(seed)

    def source(activation: torch.Tensor) -> torch.Tensor:
        if pool.shape[1:] != activation.shape[1:]:
            raise InputError(
                f"resampling at {site!r} needs sources shaped like the input: {tuple(pool.shape[1:])} "
                f"vs {tuple(activation.shape[1:])}"
            )
        rows = torch.randint(0, pool.shape[0], (activation.shape[0],), generator=generator)
        return pool[rows]

    return _replace(site, chosen, model.head_axis(site), source)
