"""Text to token batches, with an explicit BOS policy, explicit padding side, and checked inputs.

Default BOS policy (`prepend_bos=None`): exactly what the model's own tokenizer does
(`add_special_tokens=True`), so numbers match plain Hugging Face. SmolLM2's tokenizer adds no BOS,
so its prompts start without one — unlike TransformerLens, and unlike rama's SAE training contexts
(`data/packing.py` starts each with BOS). `prepend_bos=True` adds the BOS token where the tokenizer
did not; `prepend_bos=False` removes a BOS the tokenizer added. Token tensors are used as given.

Every input is checked here, before any forward pass: an empty prompt, an empty list, float or
out-of-range token ids and a tensor of the wrong rank are `InputError`s that say what would be right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rama.errors import ConfigError, InputError

Inputs = str | Sequence[str] | torch.Tensor


@dataclass(frozen=True)
class Batch:
    tokens: torch.Tensor  # [batch, pos]
    attention_mask: torch.Tensor | None  # [batch, pos], None when nothing is padded


class ContextTooLongError(InputError):
    pass


def encode(tokenizer: Any, text: str, prepend_bos: bool | None) -> list[int]:
    ids: list[int] = tokenizer(text, add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    if prepend_bos is None:
        return ids
    if bos is None:
        if prepend_bos:
            raise InputError(
                "prepend_bos=True, but this model's tokenizer has no BOS token; "
                "leave prepend_bos unset to use the tokenizer's own special tokens"
            )
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
    d_vocab: int | None = None,
) -> Batch:
    """A padded `[batch, pos]` batch from a string, a list of strings or a token tensor."""
    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    if isinstance(inputs, torch.Tensor):
        return token_batch(inputs, prepend_bos=prepend_bos, n_ctx=n_ctx, d_vocab=d_vocab)
    rows = [encode(tokenizer, t, prepend_bos) for t in prompt_list(inputs)]
    for i, row in enumerate(rows):
        if not row:
            where = "the prompt" if isinstance(inputs, str) else f"prompt {i}"
            raise InputError(
                f"{where} is empty (no tokens): give at least one character of text, "
                f"or prepend_bos=True to run the BOS token alone"
            )
    width = max(len(r) for r in rows)
    check_length(width, n_ctx)
    tokens = torch.full((len(rows), width), pad_id(tokenizer), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
        tokens[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return Batch(tokens, None if bool(mask.all()) else mask)


def prompt_list(inputs: Any) -> list[str]:
    """The prompts of a string or a list of strings; anything else is an InputError saying why."""
    if isinstance(inputs, str):
        return [inputs]
    if not isinstance(inputs, Sequence):
        raise InputError(
            f"inputs must be a string, a list of strings or a [batch, pos] token tensor, "
            f"not {type(inputs).__name__}"
        )
    texts = list(inputs)
    if not texts:
        raise InputError("inputs is an empty list: give a string or a list of at least one string")
    odd = next((t for t in texts if not isinstance(t, str)), None)
    if isinstance(odd, int):
        raise InputError(
            "inputs is a list of ints: token ids go in a tensor, torch.tensor([ids]) ([batch, pos])"
        )
    if odd is not None:
        raise InputError(f"inputs must all be strings; found a {type(odd).__name__} among them")
    return texts


def token_batch(
    inputs: torch.Tensor, *, prepend_bos: bool | None, n_ctx: int | None, d_vocab: int | None
) -> Batch:
    """A checked `[batch, pos]` long tensor of token ids (`[pos]` is one sequence)."""
    if prepend_bos:
        raise InputError(
            "prepend_bos applies to text: a token tensor is used exactly as given; "
            "put the BOS id first in the tensor yourself"
        )
    if inputs.is_floating_point() or inputs.is_complex() or inputs.dtype == torch.bool:
        raise InputError(
            f"token ids must be an integer tensor, not {inputs.dtype}; get them from "
            f"model.to_tokens(text) (a float tensor here is usually activations or embeddings)"
        )
    if inputs.ndim not in (1, 2):
        raise InputError(
            f"a token tensor is [batch, pos] (or [pos] for one sequence); got shape {tuple(inputs.shape)}"
        )
    tokens = inputs if inputs.ndim == 2 else inputs.unsqueeze(0)
    if tokens.numel() == 0:
        raise InputError(f"the token tensor is empty (shape {tuple(inputs.shape)}): give at least one token")
    check_length(tokens.shape[-1], n_ctx)
    if d_vocab is not None:
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= d_vocab:
            raise InputError(
                f"token ids must lie in 0..{d_vocab - 1} (the model's vocabulary); "
                f"these range from {low} to {high}"
            )
    return Batch(tokens.long(), None)


def check_mask(mask: torch.Tensor | None, tokens: torch.Tensor) -> None:
    """An attention mask must be `[batch, pos]` like the tokens it masks."""
    if mask is not None and tuple(mask.shape) != tuple(tokens.shape):
        raise InputError(
            f"attention_mask has shape {tuple(mask.shape)}; it must match the tokens' "
            f"[batch, pos] shape {tuple(tokens.shape)}"
        )


def check_length(length: int, n_ctx: int | None) -> None:
    if n_ctx is not None and length > n_ctx:
        raise ContextTooLongError(
            f"input is {length} tokens long but the model's context is {n_ctx} tokens; "
            f"shorten the text or split it into windows of at most {n_ctx} tokens"
        )
