"""Sparse autoencoders and transcoders: one file per architecture behind one registry.

`harvest`, `HarvestConfig`, `cache_activations` and `DiskActivations` live in `rama.activations`;
they are re-exported here for existing user code.
"""

from rama.activations import DiskActivations, HarvestConfig, cache_activations, harvest
from rama.sae import registry  # noqa: F401 - registers the architectures
from rama.sae.base import REGISTRY, SAE, ArchConfig, SAEConfig, arch_config, register
from rama.sae.batchtopk import BatchTopKConfig
from rama.sae.evaluate import evaluate
from rama.sae.gated import GatedConfig
from rama.sae.jumprelu import JumpReLUConfig
from rama.sae.matryoshka import MatryoshkaConfig
from rama.sae.relu import L1Config
from rama.sae.runner import train, train_many
from rama.sae.topk import TopKConfig
from rama.sae.training import TrainConfig, fit

__all__ = [
    "REGISTRY",
    "SAE",
    "ArchConfig",
    "BatchTopKConfig",
    "DiskActivations",
    "GatedConfig",
    "HarvestConfig",
    "JumpReLUConfig",
    "L1Config",
    "MatryoshkaConfig",
    "SAEConfig",
    "TopKConfig",
    "TrainConfig",
    "arch_config",
    "cache_activations",
    "evaluate",
    "fit",
    "harvest",
    "register",
    "train",
    "train_many",
]
