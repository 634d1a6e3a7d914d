"""Statement activations for probes: every requested site (e.g. every layer) from one forward pass per
batch, reduced to one row per statement by a token selection.

Token selections and their reduction:
- `last`: the statement's last token (no reduction);
- `mean`: the mean over the statement's tokens, leaving out position 0 when there are two or more
  (SmolLM2 and most small LMs park ~10× larger "attention sink" activations there);
- `span`: the mean over the tokens of a span marked `[[like this]]` in the text (markers removed before
  the model sees it; a token belongs to the span when it starts inside it);
- `every`: every token is its own row, labelled like its statement; a statement's score is then the
  mean of its tokens' probabilities (position 0 left out as for `mean`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from rama.activations import stop_layer
from rama.errors import InputError
from rama.hooks.model import HookedModel

TOKEN_SELECTIONS = ("last", "mean", "span", "every")
REDUCTIONS = {
    "last": "none: the last token's activation",
    "mean": "mean of the activations over the statement's tokens but position 0",
    "span": "mean of the activations over the marked span's tokens",
    "every": "each token scored alone; statement score = mean of its tokens' probabilities (not position 0)",
}
SPAN_OPEN, SPAN_CLOSE = "[[", "]]"


@dataclass(frozen=True)
class Gathered:
    """`acts[site]` `[rows, d]`; `item[r]` is the statement row r came from (rows = statements unless
    the selection is `every`)."""

    acts: dict[str, torch.Tensor]
    item: torch.Tensor  # [rows]


def check_token_selection(token: str) -> None:
    if token not in TOKEN_SELECTIONS:
        raise InputError(f"token selection {token!r} is not one of {', '.join(TOKEN_SELECTIONS)}")


def strip_span(text: str) -> tuple[str, int, int]:
    """The text without its `[[…]]` markers and the span's character range."""
    start = text.find(SPAN_OPEN)
    end = text.find(SPAN_CLOSE, start + len(SPAN_OPEN)) if start >= 0 else -1
    if start < 0 or end < 0 or text.count(SPAN_OPEN) != 1 or text.count(SPAN_CLOSE) != 1:
        raise InputError(
            f"token selection 'span' needs exactly one span marked {SPAN_OPEN}like this{SPAN_CLOSE}; "
            f"this statement has none or several: {text[:80]!r}"
        )
    clean = text[:start] + text[start + 2 : end] + text[end + 2 :]
    return clean, start, end - 2


def span_positions(model: HookedModel, text: str) -> tuple[str, int, int]:
    """The clean text and the token range `[first, stop)` of its marked span: the tokens of the text
    before the span and of the text through its end, counted on the same tokenizer."""
    clean, start, end = strip_span(text)
    first = len(model.to_tokens(clean[:start])[0]) if start > 0 else 0
    stop = len(model.to_tokens(clean[:end])[0])
    if stop <= first:
        raise InputError(f"the marked span of {text[:80]!r} holds no token of its own")
    return clean, first, stop


def token_weights(mask: torch.Tensor, token: str, spans: list[tuple[int, int]] | None) -> torch.Tensor:
    """`[batch, pos]` weights of each position in its statement's row (rows of `every` use the mask)."""
    lengths = mask.sum(1)
    weights = torch.zeros_like(mask, dtype=torch.float32)
    if token == "last":
        weights[torch.arange(mask.shape[0]), lengths - 1] = 1.0
        return weights
    if token == "span":
        for row, (first, stop) in enumerate(spans or []):
            weights[row, first:stop] = 1.0 / (stop - first)
        return weights
    weights = mask.float().clone()
    weights[:, 0] = torch.where(lengths > 1, 0.0, weights[:, 0])
    return weights if token == "every" else weights / weights.sum(1, keepdim=True)


def gather(
    model: HookedModel,
    texts: list[str],
    sites: list[str],
    token: str = "last",
    batch_size: int = 32,
    progress: bool = False,
) -> Gathered:
    """Rows of activations at every site in `sites` (names or globs), one forward pass per batch."""
    check_token_selection(token)
    if not texts:
        raise InputError("no statements to gather activations for")
    names = model.resolve(sites)
    stop = stop_layer(model, names)
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    items: list[torch.Tensor] = []
    for begin in tqdm(
        range(0, len(texts), batch_size), desc="probe activations", unit="batch", disable=not progress
    ):
        batch = texts[begin : begin + batch_size]
        spans = [span_positions(model, t) for t in batch] if token == "span" else None
        clean = [s[0] for s in spans] if spans else batch
        tokens = model.tokenize(clean)
        mask = tokens.attention_mask if tokens.attention_mask is not None else torch.ones_like(tokens.tokens)
        with torch.no_grad():
            _, cache = model.run_with_cache(
                tokens.tokens, names, attention_mask=tokens.attention_mask,
                stop_at_layer=stop if stop < model.cfg.n_layers else None,
            )  # fmt: skip
        weights = token_weights(mask, token, [(s[1], s[2]) for s in spans] if spans else None)
        item = torch.arange(begin, begin + len(batch))
        if token == "every":
            keep = weights > 0
            items.append(item[:, None].expand_as(keep)[keep])
            for name in names:
                rows[name].append(cache[name].float().cpu()[keep])
        else:
            items.append(item)
            for name in names:
                rows[name].append(torch.einsum("bp,bpd->bd", weights, cache[name].float().cpu()))
    acts = {name: torch.cat(parts) for name, parts in rows.items()}
    for name, value in acts.items():
        check_finite(value, name)
    return Gathered(acts, torch.cat(items))


def check_finite(acts: torch.Tensor, site: str) -> None:
    bad = ~torch.isfinite(acts).all(dim=-1)
    if bool(bad.any()):
        raise InputError(
            f"activations at {site} hold NaN or infinite values in {int(bad.sum())} of {len(bad)} rows "
            f"(first: row {int(bad.nonzero()[0])}); a probe cannot be fitted or scored on them: check the "
            f"model's dtype (fp16 overflows) and its weights"
        )
