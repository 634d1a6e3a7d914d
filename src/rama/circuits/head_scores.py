"""Scores that name attention heads by what they attend to (Olsson et al. 2022 style).

The pattern-level scores take `pattern [*lead, batch, head, q, k]` (one layer's `hook_pattern`, or
a stack of layers in front) and return `[*lead, head]`, so the toys' ground truth and the model-level
scores below share one definition. The model-level scores read `hook_pattern` through streaming
hooks that reduce on the fly, so no pattern is cached.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from rama.circuits.weight_circuits import model_copying_scores
from rama.errors import ConfigError
from rama.hooks.core import HookPoint
from rama.hooks.model import HookedModel
from rama.plotting import pyplot, save_figure

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


def duplicate_token_score(pattern: torch.Tensor, tokens: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """`[*lead, head]`: over the query positions set in `queries [batch, q]`, the attention mass on
    earlier keys k < q holding the same token as the query (where a duplicate-token head looks)."""
    same = tokens[:, :, None] == tokens[:, None, :]  # [batch, q, k]
    earlier = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool).tril(diagonal=-1)
    mass = (pattern * (same & earlier)[:, None]).sum(-1)  # [*lead, batch, head, q]
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


PATTERN_HEAD_SCORES = ("previous_token", "duplicate_token", "induction")


@dataclass(frozen=True)
class HeadTable:
    """Scores per head, each `[layer, head]`: `previous_token`, `duplicate_token`, `induction` (from
    attention on repeated random tokens) and `copying` (from the weights; absent without an LM head)."""

    scores: dict[str, torch.Tensor]

    def to_json(self, digits: int = 4) -> dict[str, list[list[float]]]:
        """One key per score holding a `[layer][head]` list."""
        return {
            name: [[round(v, digits) for v in row] for row in s.tolist()] for name, s in self.scores.items()
        }

    def top(self, name: str, k: int = 5) -> list[tuple[int, int, float]]:
        """The `k` highest-scoring heads for `name`, as `(layer, head, score)`, highest first."""
        table = self.scores[name]
        values, flat = table.flatten().topk(min(k, table.numel()))
        n_heads = table.shape[1]
        return [(i // n_heads, i % n_heads, v) for v, i in zip(values.tolist(), flat.tolist(), strict=True)]


def pattern_head_scores(
    model: HookedModel, batch: int = 8, half: int = 50, seed: int = 0
) -> dict[str, torch.Tensor]:
    """`{score: [layer, head]}` for the pattern-based scores, from one forward pass over `batch`
    sequences `BOS, A, A` (A: `half` random tokens). Previous-token: attention to q − 1 from q >= 2
    (position 1's previous token is BOS, where many heads park attention); duplicate-token and
    induction: from the second copy of A, to the earlier same token / the token after it."""
    length = 1 + 2 * half
    if half < 2 or batch < 1 or length > model.cfg.n_ctx:
        raise ConfigError(
            f"need batch >= 1 and half from 2 to {(model.cfg.n_ctx - 1) // 2} (BOS + 2 * half tokens must fit "
            f"the model's {model.cfg.n_ctx}-token context); got batch={batch}, half={half}"
        )
    tokens = repeated_random_tokens(model, batch, half, seed).to(model.device)
    second = torch.zeros(batch, length, dtype=torch.bool)
    second[:, 1 + half :] = True
    cpu_tokens = tokens.cpu()
    scores = {name: torch.zeros(model.cfg.n_layers, model.cfg.n_heads) for name in PATTERN_HEAD_SCORES}

    def score(pattern: torch.Tensor, hook: HookPoint) -> None:
        layer = hook.layer()
        assert layer is not None
        p = pattern.detach().float().cpu()  # [batch, head, q, k]
        scores["previous_token"][layer] = previous_token_score(p, start=2)
        scores["duplicate_token"][layer] = duplicate_token_score(p, cpu_tokens, second)
        scores["induction"][layer] = induction_score(p, cpu_tokens, second)

    with torch.no_grad(), model.hooks([(PATTERN_SITES, score)]):
        model(tokens)
    return scores


def head_table(model: HookedModel, batch: int = 8, half: int = 50, seed: int = 0) -> HeadTable:
    """Every head score as a `[layer, head]` table: the pattern scores from one pass over repeated
    random tokens, plus the weight-based copying score when the model has an LM head."""
    scores = pattern_head_scores(model, batch, half, seed)
    if model.adapter.unembedding_weight() is not None:
        scores["copying"] = model_copying_scores(model).cpu()
    return HeadTable(scores)


def _draw_scores(axis: object, name: str, table: torch.Tensor) -> None:
    """One `[layer, head]` heatmap: layers down, heads across; copying on a diverging scale."""
    signed = name == "copying"
    image = axis.imshow(  # type: ignore[attr-defined]
        table.numpy(), cmap="RdBu" if signed else "viridis", vmin=-1 if signed else 0, vmax=1, aspect="auto"
    )
    axis.set(title=name.replace("_", "-"), xlabel="head", ylabel="layer")  # type: ignore[attr-defined]
    axis.figure.colorbar(image, ax=axis)  # type: ignore[attr-defined]


def save_head_heatmaps(table: HeadTable, folder: str | Path) -> list[Path]:
    """One PNG per score (`<score>.png`) and all of them side by side (`heads.png`) in `folder`."""
    plt = pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    n_layers = next(iter(table.scores.values())).shape[0]
    height = max(2.5, 1.5 + 0.18 * n_layers)
    for name, scores in table.scores.items():
        figure, axis = plt.subplots(figsize=(4.2, height))
        _draw_scores(axis, name, scores)
        written.append(save_figure(figure, folder / f"{name}.png"))
    figure, axes = plt.subplots(1, len(table.scores), figsize=(3.6 * len(table.scores), height))
    for axis, (name, scores) in zip(list(getattr(axes, "flat", [axes])), table.scores.items(), strict=True):
        _draw_scores(axis, name, scores)
    figure.tight_layout()
    written.append(save_figure(figure, folder / "heads.png"))
    return written
