"""rama: take a trained transformer apart and name its parts."""

from rama.hooks import ActivationCache, HookedModel, HookPoint, load
from rama.models import BUILTIN_MODELS, ModelConfig

__version__ = "0.1.0"

__all__ = [
    "BUILTIN_MODELS",
    "ActivationCache",
    "HookPoint",
    "HookedModel",
    "ModelConfig",
    "__version__",
    "load",
]
