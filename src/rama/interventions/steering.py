"""Steering hooks: add a direction (ActAdd), clamp the component along it (the Golden Gate clamp),
or project it out — at one site, at chosen positions. Each returns a `(site, hook)` pair that works
in `run_with_hooks`, `model.hooks(...)` and `generate`.

Positions: `None` steers every position, generated ones included. A list indexes the sequence of a
full forward pass (negative ones count from the end); while generating with a KV cache, the
one-token steps after the prompt are left alone, since a list addresses the prompt. An open-ended
slice (`slice(1, None)`: everything but the first token, whose activations are an attention sink in
many models) covers the generated tokens too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from rama.hooks.core import HookPoint
from rama.hooks.model import HookedModel

Positions = Sequence[int] | slice | None
Hook = tuple[str, Callable[[torch.Tensor, HookPoint], torch.Tensor | None]]


def check_vector(model: HookedModel, site: str, vector: torch.Tensor) -> torch.Tensor:
    """A 1-d direction whose size matches the site's last dimension, in the model's dtype."""
    width = model.site_shape(site)[-1]
    if vector.ndim != 1 or vector.shape[0] != width:
        raise ValueError(
            f"a steering vector for {site!r} must have shape ({width},); got {tuple(vector.shape)}"
        )
    if not bool(torch.isfinite(vector).all()):
        raise ValueError(f"the steering vector for {site!r} holds NaN or inf")
    return vector.detach().to(model.device, next(model.hf.parameters()).dtype)


def check_strength(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value}")
    return float(value)


def position_index(positions: Positions, length: int) -> list[int] | None:
    """Absolute positions for a sequence of `length`, or None for all; out of range is an error."""
    if positions is None:
        return None
    if isinstance(positions, slice):
        return list(range(length))[positions]
    absolute = [p + length if p < 0 else p for p in positions]
    bad = [p for p, a in zip(positions, absolute, strict=True) if not 0 <= a < length]
    if bad:
        raise IndexError(f"positions {bad} lie outside the sequence of length {length}")
    return absolute


def positions_for_call(positions: Positions, length: int) -> tuple[bool, list[int] | None]:
    """(steer this call?, absolute positions or None for all) for a forward call of `length` tokens.
    A one-token call with a list of positions is a cached generation step: left alone."""
    if length == 1 and positions is not None:
        open_ended = isinstance(positions, slice) and positions.stop is None
        return open_ended, None
    return True, position_index(positions, length)


def _steer(site: str, positions: Positions, change: Callable[[torch.Tensor], torch.Tensor]) -> Hook:
    """A hook applying `change` to the `[..., d]` activations at `positions` (dim 1 is `pos`)."""

    def hook(activation: torch.Tensor, point: HookPoint) -> torch.Tensor | None:
        apply, chosen = positions_for_call(positions, activation.shape[1])
        if not apply:
            return None
        out = activation.clone()
        if chosen is None:
            out = change(out)
        else:
            out[:, chosen] = change(out[:, chosen])
        if not bool(torch.isfinite(out).all()):
            raise FloatingPointError(f"steering at {point.name!r} produced NaN or inf; lower the strength")
        return out

    return site, hook


def add_vector(
    model: HookedModel, site: str, vector: torch.Tensor, strength: float = 1.0, positions: Positions = None
) -> Hook:
    """ActAdd: `x + strength · vector`."""
    v = check_vector(model, site, vector) * check_strength("strength", strength)
    return _steer(site, positions, lambda x: x + v)


def clamp_direction(
    model: HookedModel, site: str, direction: torch.Tensor, value: float, positions: Positions = None
) -> Hook:
    """Set the component along unit(direction) to `value`: `x + (value − x·u) u`."""
    u = check_vector(model, site, direction)
    u = u / u.norm().clamp_min(1e-12)
    target = check_strength("value", value)
    return _steer(site, positions, lambda x: x + (target - x @ u)[..., None] * u)


def project_out(model: HookedModel, site: str, direction: torch.Tensor, positions: Positions = None) -> Hook:
    """Remove the component along `direction`: `x − (x·u) u`."""
    return clamp_direction(model, site, direction, 0.0, positions)


def mean_activation(
    model: HookedModel, site: str, prompts: Sequence[str], last_only: bool = True
) -> torch.Tensor:
    """Mean activation at `site` over prompts: at each prompt's last token, or over all its tokens but
    the first (position 0 is an attention sink with outsized activations in many models)."""
    total: torch.Tensor | None = None
    count = 0
    for prompt in prompts:
        with torch.no_grad():
            _, cache = model.run_with_cache(prompt, names=site)
        act = cache[site][0].float()  # [pos, d]
        rows = act[-1:] if last_only or act.shape[0] == 1 else act[1:]
        total = rows.sum(0) if total is None else total + rows.sum(0)
        count += rows.shape[0]
    if total is None:
        raise ValueError("need at least one prompt to average over")
    return total / count


def contrastive_vector(
    model: HookedModel,
    site: str,
    positive: Sequence[str],
    negative: Sequence[str],
    last_only: bool = True,
) -> torch.Tensor:
    """Contrastive activation addition: mean activation over `positive` minus over `negative`."""
    if not positive or not negative:
        raise ValueError("contrastive steering needs at least one positive and one negative prompt")
    return mean_activation(model, site, positive, last_only) - mean_activation(
        model, site, negative, last_only
    )
