"""Features: what SAE latents respond to (top activations now; dashboards later)."""

from rama.features.search import (
    LatentEffect,
    LatentMatch,
    concept_token_ids,
    find_latents,
    latents_by_contrast,
    latents_by_effect,
    latents_by_effect_per_concept,
)
from rama.features.top_activations import TopActivation, top_activations

__all__ = [
    "LatentEffect",
    "LatentMatch",
    "TopActivation",
    "concept_token_ids",
    "find_latents",
    "latents_by_contrast",
    "latents_by_effect",
    "latents_by_effect_per_concept",
    "top_activations",
]
