"""Where a steering direction comes from — an SAE feature, a vector file, or two contrasting prompt
sets — and the hook that applies it, for the `rama steer` commands and for scripts alike."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from rama.errors import ConfigError, InputError
from rama.hooks.model import HookedModel
from rama.interventions.feature_edits import check_sae_site, feature_direction, set_features
from rama.interventions.steering import Hook, add_vector, clamp_direction, contrastive_vector
from rama.sae.base import SAE

MODES = ("add", "clamp")


@dataclass(frozen=True)
class SteeringSource:
    """Exactly one of: `sae` + `feature`, `vector` (a file), `contrast` (positive, negative prompts)."""

    sae: str | None = None
    feature: int | None = None
    vector: str | None = None
    contrast: tuple[tuple[str, ...], tuple[str, ...]] | None = None

    def __post_init__(self) -> None:
        given = [self.sae is not None, self.vector is not None, self.contrast is not None]
        if sum(given) != 1:
            raise ConfigError(
                "give exactly one steering source: --sae DIR --feature ID, --vector FILE, or --contrast A B"
            )
        if self.sae is not None and self.feature is None:
            raise ConfigError("--sae needs --feature ID: which latent to steer")


def load_vector(path: str | os.PathLike[str]) -> torch.Tensor:
    """A 1-d vector from `.pt` (a tensor), `.npy`, or `.safetensors` (its only tensor); a missing,
    corrupt or truncated file is an InputError naming it."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"no vector file at {str(file)!r}")
    if file.suffix not in (".pt", ".npy", ".safetensors"):
        raise InputError(f"vector files are .pt, .npy or .safetensors; got {file.name!r}")
    try:
        vector = _read_vector_file(file)
    except InputError:
        raise
    except (ValueError, OSError, EOFError, RuntimeError, pickle.UnpicklingError, SafetensorError) as error:
        # how torch/pickle, numpy and safetensors each fail on a corrupt or truncated file
        raise InputError(f"cannot read {str(file)!r} as a {file.suffix} vector file: {error}") from error
    if not isinstance(vector, torch.Tensor) or vector.ndim != 1:
        raise InputError(f"{file} must hold a 1-d tensor; got {getattr(vector, 'shape', type(vector))}")
    return vector.float()


def _read_vector_file(file: Path) -> object:
    if file.suffix == ".npy":
        import numpy as np

        return torch.from_numpy(np.load(file))
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(file)
        if len(tensors) != 1:
            raise InputError(f"{file} holds {len(tensors)} tensors ({', '.join(tensors)}); keep exactly one")
        return next(iter(tensors.values()))
    return torch.load(file, weights_only=True)


def direction(model: HookedModel, site: str, source: SteeringSource) -> torch.Tensor:
    """The steering direction at `site`: the feature's decoder row, the file's vector, or the
    difference of mean activations (every token but the first) between the contrast's two prompt sets."""
    if source.sae is not None and source.feature is not None:
        sae = SAE.load(source.sae)
        check_sae_site(model, sae, site)
        return feature_direction(sae, source.feature)
    if source.vector is not None:
        return load_vector(source.vector)
    assert source.contrast is not None
    positive, negative = source.contrast
    return contrastive_vector(model, site, list(positive), list(negative))


def steering_factory(
    model: HookedModel, site: str, source: SteeringSource, mode: str = "add"
) -> Callable[[float], Hook]:
    """Resolve the source once (load the SAE, compute the contrast); return `strength -> hook`.
    `add`: x + strength·v. `clamp`: the component along v set to `strength` — for an SAE feature,
    its activation set to `strength` through the SAE with the error term kept."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if mode == "clamp" and source.sae is not None and source.feature is not None:
        sae, feature = SAE.load(source.sae), source.feature
        return lambda strength: set_features(model, sae, [feature], strength, site=site)
    vector = direction(model, site, source)
    if mode == "clamp":
        return lambda strength: clamp_direction(model, site, vector, strength)
    return lambda strength: add_vector(model, site, vector, strength)


def steering_hook(
    model: HookedModel, site: str, source: SteeringSource, strength: float, mode: str = "add"
) -> Hook:
    """One hook at one strength (see `steering_factory`)."""
    return steering_factory(model, site, source, mode)(strength)
