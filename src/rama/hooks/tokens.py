"""Text to token batches, with an explicit BOS policy and explicit padding side.

Default BOS policy: exactly what the model's own tokenizer does (`add_special_tokens=True`), so
numbers match plain Hugging Face. `prepend_bos=True` adds the BOS token where the tokenizer did not;
`prepend_bos=False` removes a BOS the tokenizer added.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

Inputs = str | Sequence[str] | torch.Tensor


@dataclass(frozen=True)
class Batch:
    tokens: torch.Tensor  # [batch, pos]
    attention_mask: torch.Tensor | None  # [batch, pos], None when nothing is padded


class ContextTooLongError(ValueError):
    pass


def encode(tokenizer: Any, text: str, prepend_bos: bool | None) -> list[int]:
    ids: list[int] = tokenizer(text, add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is None or prepend_bos is None:
        return ids
    has_bos = bool(ids) and ids[0] == bos
    if prepend_bos and not has_bos:
        return [bos, *ids]
    if not prepend_bos and has_bos:
        return ids[1:]
    return ids


def pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0  # pragma: no cover


def tokenize(
    tokenizer: Any,
    inputs: Inputs,
    *,
    prepend_bos: bool | None = None,
    padding_side: str = "right",
    n_ctx: int | None = None,
) -> Batch:
    """A padded `[batch, pos]` batch from a string, a list of strings or a token tensor."""
    if isinstance(inputs, torch.Tensor):
        tokens = inputs if inputs.ndim == 2 else inputs.unsqueeze(0)
        check_length(tokens.shape[-1], n_ctx)
        return Batch(tokens.long(), None)
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise TypeError(
            "inputs must be a string, a non-empty list of strings, or a [batch, pos] token tensor"
        )
    rows = [encode(tokenizer, t, prepend_bos) for t in texts]
    width = max(len(r) for r in rows)
    check_length(width, n_ctx)
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    tokens = torch.full((len(rows), width), pad_id(tokenizer), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
        tokens[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return Batch(tokens, None if bool(mask.all()) else mask)


def check_length(length: int, n_ctx: int | None) -> None:
    if n_ctx is not None and length > n_ctx:
        raise ContextTooLongError(
            f"input is {length} tokens long but the model's context is {n_ctx} tokens; "
            f"shorten the text or split it into windows of at most {n_ctx} tokens"
        )
