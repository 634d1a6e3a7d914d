"""Scores that name attention heads by what they attend to (Olsson et al. 2022 style).

Both read `hook_pattern` through streaming hooks that reduce on the fly, so no pattern is cached.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from rama.hooks.core import HookPoint
from rama.hooks.model import HookedModel


def _offset_diagonal_mean(pattern: torch.Tensor, offset: int, start: int) -> torch.Tensor:
    """Mean over batch and query positions >= start of pattern[q, q - offset]: `[head]`."""
    diagonal = pattern.diagonal(offset=-offset, dim1=-2, dim2=-1)  # [batch, head, pos - offset]
    return diagonal[..., max(0, start - offset) :].mean(dim=(0, 2))


def previous_token_scores(model: HookedModel, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """`[layer, head]`: mean attention from each position (after the first) to the one before it."""
    total = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    count = 0

    def accumulate(pattern: torch.Tensor, hook: HookPoint) -> None:
        layer = hook.layer()
        assert layer is not None
        total[layer] += _offset_diagonal_mean(pattern.float(), 1, 1).cpu()

    with torch.no_grad(), model.hooks([("blocks.*.attn.hook_pattern", accumulate)]):
        for tokens in batches:
            model(tokens)
            count += 1
    return total / max(count, 1)


def repeated_random_tokens(model: HookedModel, batch: int, half: int, seed: int = 0) -> torch.Tensor:
    """`[batch, 1 + 2 * half]`: BOS (when there is one), random tokens, the same tokens again."""
    generator = torch.Generator().manual_seed(seed)
    low = min(1000, model.cfg.d_vocab // 2)
    first = torch.randint(low, model.cfg.d_vocab, (batch, half), generator=generator)
    bos = model.tokenizer.bos_token_id
    prefix = torch.full((batch, 1), bos if bos is not None else first[0, 0].item(), dtype=torch.long)
    return torch.cat([prefix, first, first], dim=1)


def induction_scores(model: HookedModel, batch: int = 4, half: int = 50, seed: int = 0) -> torch.Tensor:
    """`[layer, head]`: on a repeated random sequence, mean attention from each second-half token to
    the token just after its first occurrence (offset `half - 1` back)."""
    tokens = repeated_random_tokens(model, batch, half, seed)
    scores = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)

    def score(pattern: torch.Tensor, hook: HookPoint) -> None:
        layer = hook.layer()
        assert layer is not None
        scores[layer] = _offset_diagonal_mean(pattern.float(), half - 1, 1 + half).cpu()

    with torch.no_grad(), model.hooks([("blocks.*.attn.hook_pattern", score)]):
        model(tokens)
    return scores
