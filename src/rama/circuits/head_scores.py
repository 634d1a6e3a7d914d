"""Scores that name attention heads by what they attend to (Olsson et al. 2022 style).

The pattern-level scores take `pattern [*lead, batch, head, q, k]` (one layer's `hook_pattern`, or
a stack of layers in front) and return `[*lead, head]`, so the toys' ground truth and the model-level
scores below share one definition. The model-level scores read `hook_pattern` through streaming
hooks that reduce on the fly, so no pattern is cached.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from rama.hooks.core import HookPoint
from rama.hooks.model import HookedModel

PATTERN_SITES = "blocks.*.attn.hook_pattern"


def _masked_query_mean(per_query: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """`[*lead, head]`: mean of `per_query [*lead, batch, head, q]` over the set `queries [batch, q]`."""
    weights = queries.to(per_query.dtype)[:, None, :]  # [batch, 1, q]
    return (per_query * weights).sum(dim=(-3, -1)) / weights.sum().clamp_min(1.0)


def previous_token_score(
    pattern: torch.Tensor, queries: torch.Tensor | None = None, start: int = 1
) -> torch.Tensor:
    """`[*lead, head]`: mean attention from each query position q >= `start` (and where
    `queries [batch, q]` is set, e.g. not padding) to position q − 1."""
    batch, n = pattern.shape[-4], pattern.shape[-2]
    diagonal = pattern.diagonal(offset=-1, dim1=-2, dim2=-1)  # [*lead, batch, head, q - 1]: q = i + 1
    keep = (torch.arange(1, n) >= start).expand(batch, n - 1)
    if queries is not None:
        keep = keep & queries[:, 1:].bool()
    return _masked_query_mean(diagonal, keep)


def induction_score(pattern: torch.Tensor, tokens: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """`[*lead, head]`: over the query positions set in `queries [batch, q]`, the attention mass
    on keys k <= q whose previous token equals the query's token (where an induction head looks:
    just after the token's earlier occurrence); `tokens [batch, q]` are the run's token ids."""
    matches = tokens[:, None, :-1] == tokens[:, 1:, None]  # [batch, q - 1, k - 1]: token[k-1] == token[q]
    causal = torch.ones(matches.shape[1], matches.shape[2], dtype=torch.bool).tril()
    targets = torch.zeros(tokens.shape[0], tokens.shape[1], tokens.shape[1], dtype=torch.bool)
    targets[:, 1:, 1:] = matches & causal  # [batch, q, k]
    mass = (pattern * targets[:, None]).sum(-1)  # [*lead, batch, head, q]
    return _masked_query_mean(mass, queries)


def attention_between(pattern: torch.Tensor, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """`[*lead, head]`: mean over the batch of the attention from position `queries[b]` to position
    `keys[b]` (one named position per prompt, e.g. END → IO in IOI)."""
    rows = torch.arange(pattern.shape[-4])
    by_row = pattern.movedim(-3, -1)  # [*lead, batch, q, k, head]
    return by_row[..., rows, queries, keys, :].mean(-2)


def previous_token_scores(model: HookedModel, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """`[layer, head]`: mean attention from each position (after the first) to the one before it."""
    total = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    count = 0

    def accumulate(pattern: torch.Tensor, hook: HookPoint) -> None:
        layer = hook.layer()
        assert layer is not None
        total[layer] += previous_token_score(pattern.float()).cpu()

    with torch.no_grad(), model.hooks([(PATTERN_SITES, accumulate)]):
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
        diagonal = pattern.float().diagonal(
            offset=-(half - 1), dim1=-2, dim2=-1
        )  # [batch, head, pos - half + 1]
        scores[layer] = diagonal[..., 2:].mean(dim=(0, 2)).cpu()  # queries from 1 + half on

    with torch.no_grad(), model.hooks([(PATTERN_SITES, score)]):
        model(tokens)
    return scores
