"""Sparse autoencoders and transcoders: one file per architecture behind one registry.

`harvest`, `HarvestConfig`, `cache_activations` and `DiskActivations` live in `rama.activations`;
they are re-exported here for existing user code.
"""

from rama.activations import DiskActivations, HarvestConfig, cache_activations, harvest
from rama.sae import batchtopk, gated, jumprelu, matryoshka, relu, topk  # noqa: F401 - registers the architectures
from rama.sae.base import REGISTRY, SAE, SAEConfig
from rama.sae.evaluate import evaluate
from rama.sae.runner import train, train_many
from rama.sae.training import TrainConfig, fit

__all__ = [
    "REGISTRY",
    "SAE",
    "DiskActivations",
    "HarvestConfig",
    "SAEConfig",
    "TrainConfig",
    "cache_activations",
    "evaluate",
    "fit",
    "harvest",
    "train",
    "train_many",
]
