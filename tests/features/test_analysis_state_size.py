"""The analysis keeps a fixed amount of state: every tensor it holds has the same size after 4× the
tokens, so its memory does not grow with the number of tokens (docs/benchmarks.md has the measured
peak RSS of whole builds up to 5 M tokens)."""

from __future__ import annotations

from typing import Any

import torch
from feature_helpers import tiny_model, tiny_sae, token_rows

from rama.features import BuildConfig, analyse

CONFIG = BuildConfig(batch_size=6, top_k=5, context_left=3, context_right=2, progress=False)


def tensor_bytes(obj: Any, seen: set[int] | None = None) -> dict[str, int]:
    """{attribute path: bytes} of every tensor reachable through attributes, lists and dicts."""
    seen = set() if seen is None else seen
    found: dict[str, int] = {}

    def walk(item: Any, path: str) -> None:
        if id(item) in seen:
            return
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            found[path] = item.nbytes
        elif isinstance(item, dict):
            for key, value in item.items():
                walk(value, f"{path}[{key!r}]")
        elif isinstance(item, (list, tuple)):
            for i, value in enumerate(item):
                walk(value, f"{path}[{i}]")
        elif hasattr(item, "__dict__") and not isinstance(item, torch.nn.Module):
            for key, value in vars(item).items():
                walk(value, f"{path}.{key}")

    walk(obj, "analysis")
    return found


def test_state_does_not_grow_with_tokens() -> None:
    model, sae = tiny_model(), tiny_sae()
    small = analyse(sae, model, token_rows(rows=12, seed=1), config=CONFIG)
    large = analyse(sae, model, token_rows(rows=48, seed=1), config=CONFIG)
    assert large.latents.tokens == 4 * small.latents.tokens > 0
    small_bytes, large_bytes = tensor_bytes(small), tensor_bytes(large)
    assert len(small_bytes) >= 10  # counts, totals, histograms, both reservoirs, for latents and neurons
    assert small_bytes == large_bytes
    assert int(large.latents.count.sum()) > int(small.latents.count.sum())  # it did see more firing
