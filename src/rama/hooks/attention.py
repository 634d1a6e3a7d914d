"""Attention scores and patterns, whatever attention kernel the model runs.

Fused kernels (sdpa, flash) never materialise the pattern. While a scores/pattern site is hooked,
the attention modules of that model are routed through `probe_attention`, registered with
transformers' `AttentionInterface` under `rama_probe:<original>`. It computes the scores and the
pattern eagerly for the hooked modules, lets hooks read or replace them, and — unless a hook
replaced one — still returns the original kernel's output, so logits stay bit-identical.

The registries below are shared by every model in the process, so they change only under `_GUARD`
(a forward pass itself is serialised per model by `rama.hooks.core.model_lock`).
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

SiteRunner = Callable[[torch.Tensor], "torch.Tensor | None"]

PREFIX = "rama_probe:"
_RUNNERS: weakref.WeakKeyDictionary[nn.Module, dict[str, SiteRunner]] = weakref.WeakKeyDictionary()
_REGISTERED: set[str] = set()
_GUARD = threading.Lock()


def _original_function(module: nn.Module, implementation: str) -> Callable[..., Any]:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if implementation == "eager":
        return getattr(sys.modules[type(module).__module__], "eager_attention_forward")  # noqa: B009
    return ALL_ATTENTION_FUNCTIONS[implementation]


def repeat_kv(states: torch.Tensor, n_groups: int) -> torch.Tensor:
    """`[batch, kv_head, pos, d]` -> `[batch, kv_head * n_groups, pos, d]`."""
    if n_groups == 1:
        return states
    return states.repeat_interleave(n_groups, dim=1)


def _kv_groups(module: nn.Module, query: torch.Tensor, key: torch.Tensor) -> int:
    return int(getattr(module, "num_key_value_groups", query.shape[1] // key.shape[1]))


def masked_scores(
    module: nn.Module,
    query: torch.Tensor,  # [batch, head, q_pos, d_head]
    key: torch.Tensor,  # [batch, kv_head, k_pos, d_head]
    attention_mask: torch.Tensor | None,
    kwargs: dict[str, Any],
) -> torch.Tensor:
    """Pre-softmax scores `[batch, head, q_pos, k_pos]`, computed as HF's eager attention does."""
    key = repeat_kv(key, _kv_groups(module, query, key))
    scaling = kwargs.get("scaling")
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    softcap = kwargs.get("softcap")
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        mask = attention_mask[:, :, :, : key.shape[-2]]
        if mask.dtype == torch.bool:
            return scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        return scores + mask
    is_causal = kwargs.get("is_causal")
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    q_len, k_len = scores.shape[-2], scores.shape[-1]
    if is_causal and q_len > 1:
        q_positions = torch.arange(k_len - q_len, k_len, device=scores.device)[:, None]
        future = torch.arange(k_len, device=scores.device)[None, :] > q_positions
        scores = scores.masked_fill(future, torch.finfo(scores.dtype).min)
    return scores


def make_probe(implementation: str) -> Callable[..., Any]:
    def probe_attention(
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        original = _original_function(module, implementation)
        with _GUARD:
            runners = _RUNNERS.get(module)
        if not runners:
            return original(module, query, key, value, attention_mask, **kwargs)
        scores = masked_scores(module, query, key, attention_mask, kwargs)
        replaced = False
        if "scores" in runners and (new := runners["scores"](scores)) is not None:
            scores, replaced = new, True
        pattern = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        if "pattern" in runners and (new := runners["pattern"](pattern)) is not None:
            pattern, replaced = new, True
        if not replaced:
            output, _ = original(module, query, key, value, attention_mask, **kwargs)
            return output, pattern
        values = repeat_kv(value, _kv_groups(module, query, value))
        return torch.matmul(pattern, values).transpose(1, 2).contiguous(), pattern

    return probe_attention


def _register(implementation: str) -> str:
    name = PREFIX + implementation
    with _GUARD:
        if name in _REGISTERED:
            return name
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

        AttentionInterface.register(name, make_probe(implementation))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[implementation])
        _REGISTERED.add(name)
        return name


def add_runner(module: nn.Module, kind: str, runner: SiteRunner) -> None:
    with _GUARD:
        _RUNNERS.setdefault(module, {})[kind] = runner


def clear_runners(modules: list[nn.Module]) -> None:
    with _GUARD:
        for module in modules:
            _RUNNERS.pop(module, None)


@contextmanager
def probing(modules: list[nn.Module]) -> Iterator[None]:
    """Route these attention modules' configs through the probe for the duration."""
    configs: dict[int, Any] = {id(m.config): m.config for m in modules if hasattr(m, "config")}
    saved = {key: c._attn_implementation for key, c in configs.items()}
    try:
        for key, config in configs.items():
            current = saved[key] or "eager"
            if not current.startswith(PREFIX):
                config._attn_implementation_internal = _register(current)
        yield
    finally:
        for key, config in configs.items():
            config._attn_implementation_internal = saved[key]
