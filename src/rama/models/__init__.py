"""Model access: loading and one adapter per architecture family."""

from rama.models.adapter import Adapter, BlockPaths
from rama.models.config import ModelConfig
from rama.models.loading import BUILTIN_MODELS, ModelNotFoundError, load_hf
from rama.models.registry import ADAPTERS, adapter_for

__all__ = [
    "ADAPTERS",
    "BUILTIN_MODELS",
    "Adapter",
    "BlockPaths",
    "ModelConfig",
    "ModelNotFoundError",
    "adapter_for",
    "load_hf",
]
