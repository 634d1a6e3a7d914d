"""Interventions on SAE features: clamp or ablate a feature's activation through encode/decode with
the SAE's error term kept (Templeton et al. 2024), so nothing but the chosen features changes."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rama.errors import InputError
from rama.hooks.core import HookPoint
from rama.hooks.model import HookedModel
from rama.interventions.steering import Hook, Positions, check_strength, positions_for_call
from rama.sae.base import SAE


def check_sae_site(model: HookedModel, sae: SAE, site: str | None) -> str:
    """The site the SAE reads (its own `hook_name` unless given), checked against the SAE's width."""
    chosen = site or sae.cfg.hook_name
    if not chosen:
        raise InputError("this SAE records no hook_name; pass the site it was trained on")
    if sae.cfg.hook_name and site and site != sae.cfg.hook_name:
        raise InputError(f"this SAE was trained on {sae.cfg.hook_name!r}, not {site!r}")
    width = model.site_shape(chosen)[-1]
    if width != sae.cfg.d_in:
        raise InputError(f"the SAE reads d_in={sae.cfg.d_in} but {chosen!r} has width {width}")
    if sae.cfg.is_transcoder:
        raise InputError("feature steering needs an SAE (it reconstructs its own site); this is a transcoder")
    return chosen


def feature_direction(sae: SAE, feature: int) -> torch.Tensor:
    """The decoder row of `feature`: what one unit of its activation adds, `[d_in]`."""
    sae.check_latents([feature])
    return sae.W_dec[feature].detach().clone()


def set_features(
    model: HookedModel,
    sae: SAE,
    features: Sequence[int],
    values: Sequence[float] | float,
    positions: Positions = None,
    site: str | None = None,
) -> Hook:
    """Set the activations of `features` to `values` (a clamp; 0 ablates), keeping the SAE error:
    `x' = x − decode(encode(x)) + decode(codes with the features set)`."""
    name = check_sae_site(model, sae, site)
    chosen = sae.check_latents(features)
    targets = [values] * len(chosen) if isinstance(values, float | int) else list(values)
    if len(targets) != len(chosen):
        raise InputError(f"got {len(targets)} values for {len(chosen)} features")
    targets = [check_strength("feature value", float(v)) for v in targets]

    def hook(activation: torch.Tensor, point: HookPoint) -> torch.Tensor | None:
        apply, index = positions_for_call(positions, activation.shape[1])
        if not apply:
            return None
        x = activation if index is None else activation[:, index]
        with torch.no_grad():
            sae_input = x.to(sae.W_enc.dtype)
            codes = sae.encode(sae_input)
            edited = codes.clone()
            edited[..., chosen] = torch.tensor(targets, dtype=codes.dtype, device=codes.device)
            change = (sae.decode(edited, sae_input) - sae.decode(codes, sae_input)).to(activation.dtype)
        out = activation.clone()
        if index is None:
            return out + change
        out[:, index] = x + change
        return out

    return name, hook


def ablate_features(
    model: HookedModel,
    sae: SAE,
    features: Sequence[int],
    positions: Positions = None,
    site: str | None = None,
) -> Hook:
    """Zero-ablate SAE features (error term kept)."""
    return set_features(model, sae, features, 0.0, positions, site)
