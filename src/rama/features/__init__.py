"""Features: what SAE latents respond to (top activations now; dashboards later)."""

from rama.features.search import LatentMatch, concept_token_ids, find_latents, latents_by_contrast
from rama.features.top_activations import TopActivation, top_activations

__all__ = [
    "LatentMatch",
    "TopActivation",
    "concept_token_ids",
    "find_latents",
    "latents_by_contrast",
    "top_activations",
]
