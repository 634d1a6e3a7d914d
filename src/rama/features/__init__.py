"""Features: what SAE latents respond to and what they do. `build` runs one streaming pass over a corpus
and writes a SQLite feature store (`FeatureStore`); `top_activations` and the latent searches answer quick
questions without one."""

from rama.features.analysis import BuildConfig, FeatureAnalysis, analyse
from rama.features.builder import build
from rama.features.search import (
    LatentEffect,
    LatentMatch,
    concept_token_ids,
    find_latents,
    latents_by_contrast,
    latents_by_effect,
    latents_by_effect_per_concept,
)
from rama.features.store import FeatureStore, StoreError, StoreMismatchError
from rama.features.summaries import SummaryConfig, UnitStats, merge
from rama.features.top_activations import TopActivation, top_activations

__all__ = [
    "BuildConfig",
    "FeatureAnalysis",
    "FeatureStore",
    "LatentEffect",
    "LatentMatch",
    "StoreError",
    "StoreMismatchError",
    "SummaryConfig",
    "TopActivation",
    "UnitStats",
    "analyse",
    "build",
    "concept_token_ids",
    "find_latents",
    "latents_by_contrast",
    "latents_by_effect",
    "latents_by_effect_per_concept",
    "merge",
    "top_activations",
]
