"""Features: what SAE latents respond to (top activations now; dashboards later)."""

from rama.features.top_activations import TopActivation, top_activations

__all__ = ["TopActivation", "top_activations"]
