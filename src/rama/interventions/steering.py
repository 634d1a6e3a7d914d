"""Steering hooks: add a direction (ActAdd), clamp the component along it (the Golden Gate clamp),
or project it out — at one site, at chosen positions. Each returns a `(site, hook)` pair that works
in `run_with_hooks`, `model.hooks(...)` and `generate`.

Positions: `None` steers every position, generated ones included. A list indexes the sequence of a
full forward pass (negative ones count from the end); while generating with a KV cache, the
one-token steps after the prompt are left alone, since a list addresses the prompt. An open-ended
slice (`slice(1, None)`: everything but the first token, whose activations are an attention sink in
many models) covers the generated tokens too.

Strength on a scale a user can guess: `relative_vector` scales a direction to `strength` times the
site's typical residual norm (`typical_norm`: the mean ‖activation‖ at the site over every token but the
first of a few fixed neutral sentences, `REFERENCE_TEXTS`), so strength 1.0 adds a vector as long as the
activations it is added to. `add_vector` itself adds `strength · vector` as given, for callers who
choose the norm themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from rama.errors import ConfigError, InputError, RamaError
from rama.hooks import HookFn
from rama.hooks.core import HookPoint
from rama.hooks.model import HookedModel

Positions = Sequence[int] | slice | None
Hook = tuple[str, HookFn]

# Neutral, topic-free sentences: the residual norm they give a site is the unit of `relative_vector`.
REFERENCE_TEXTS = (
    "The weather was mild for most of the week, and people spent their evenings outside.",
    "She opened the letter, read it twice, and put it back in the drawer.",
    "The report lists the costs of the project and the dates by which each part is due.",
    "Children learn to read by hearing stories and by trying to sound out new words.",
)


class SteeringOverflowError(RamaError, FloatingPointError):
    """Steering pushed the activations or the logits to NaN or inf: the strength is far too large."""


class PositionError(RamaError, IndexError):
    """A steering position lies outside the sequence."""


def check_vector(model: HookedModel, site: str, vector: torch.Tensor) -> torch.Tensor:
    """A 1-d direction whose size matches the site's last dimension, in the model's dtype."""
    width = model.site_shape(site)[-1]
    if vector.ndim != 1 or vector.shape[0] != width:
        raise InputError(
            f"a steering vector for {site!r} must have shape ({width},); got {tuple(vector.shape)}"
        )
    if not bool(torch.isfinite(vector).all()):
        raise InputError(f"the steering vector for {site!r} holds NaN or inf")
    return vector.detach().to(model.device, next(model.hf.parameters()).dtype)


def check_strength(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number; got {value}")
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
        raise PositionError(f"positions {bad} lie outside the sequence of length {length}")
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
            raise SteeringOverflowError(f"steering at {point.name!r} produced NaN or inf; lower the strength")
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
    model: HookedModel, site: str, prompts: Sequence[str], last_only: bool = False
) -> torch.Tensor:
    """Mean activation at `site` over prompts: over every token but the first (position 0 is an
    attention sink with outsized activations in many models), or at each prompt's last token only."""
    total: torch.Tensor | None = None
    count = 0
    for prompt in prompts:
        if not prompt.strip():
            raise InputError("a prompt to average activations over is empty")
        with torch.no_grad():
            _, cache = model.run_with_cache(prompt, names=site)
        act = cache[site][0].float()  # [pos, d]
        rows = act[-1:] if last_only or act.shape[0] == 1 else act[1:]
        total = rows.sum(0) if total is None else total + rows.sum(0)
        count += rows.shape[0]
    if total is None:
        raise InputError("need at least one prompt to average over")
    return total / count


def contrastive_vector(
    model: HookedModel,
    site: str,
    positive: Sequence[str],
    negative: Sequence[str],
    last_only: bool = False,
) -> torch.Tensor:
    """Contrastive activation addition: mean activation over `positive` minus over `negative`, each
    averaged over every token but the first (as ActAdd reads a whole prompt), which holds up for a
    single short pair; `last_only=True` takes each prompt's last token instead."""
    if not positive or not negative:
        raise InputError("contrastive steering needs at least one positive and one negative prompt")
    return mean_activation(model, site, positive, last_only) - mean_activation(
        model, site, negative, last_only
    )


def typical_norm(model: HookedModel, site: str, texts: Sequence[str] = REFERENCE_TEXTS) -> float:
    """Mean ‖activation‖ at `site` over every token but the first of `texts` (SmolLM2-135M: about 140
    at layers 9 and 12, 200 at layer 18): the unit of `relative_vector`'s strength."""
    norms = []
    for text in texts:
        with torch.no_grad():
            _, cache = model.run_with_cache(text, names=site)
        norms.append(cache[site][0, 1:].float().norm(dim=-1))
    every = torch.cat(norms)
    if every.numel() == 0:
        raise InputError("typical_norm needs texts of at least two tokens")
    return float(every.mean())


def relative_vector(
    model: HookedModel, site: str, vector: torch.Tensor, strength: float, unit_norm: float | None = None
) -> torch.Tensor:
    """`vector` rescaled to `strength` × the site's typical residual norm (`unit_norm`, measured by
    `typical_norm` when not given): strength 1.0 is as long as the activations it is added to."""
    direction = check_vector(model, site, vector).float()
    length = float(direction.norm())
    if length == 0.0:
        raise InputError(f"the steering vector for {site!r} is zero: it has no direction")
    scale = typical_norm(model, site) if unit_norm is None else unit_norm
    return direction / length * (check_strength("strength", strength) * scale)


def check_finite_output(model: HookedModel, prompt: str | Sequence[str], hooks: Sequence[Hook]) -> None:
    """One steered forward pass on `prompt`; NaN or inf logits are a `SteeringOverflowError`, so an
    overflowing strength fails loudly instead of generating nothing."""
    with torch.no_grad():
        logits = model.run_with_hooks(prompt, list(hooks))
    if not bool(torch.isfinite(logits).all()):
        raise SteeringOverflowError(
            "steering made the model's logits NaN or inf; lower the strength (or check the vector)"
        )
