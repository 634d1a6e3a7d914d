"""The hook core: site specs -> PyTorch hooks, caches, and the `HookedModel` API."""

from rama.hooks.cache import ActivationCache
from rama.hooks.core import HookFn, HookPoint, HookReturnError, SiteError
from rama.hooks.model import HookedModel, load
from rama.hooks.tokens import ContextTooLongError

__all__ = [
    "ActivationCache",
    "ContextTooLongError",
    "HookFn",
    "HookPoint",
    "HookReturnError",
    "HookedModel",
    "SiteError",
    "load",
]
