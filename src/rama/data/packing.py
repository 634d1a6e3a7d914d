"""Tokenise documents and pack them into fixed-length contexts, streaming and reproducibly.

BOS / special-token policy (explicit, because it decides what SAEs and metrics see):
- `prepend_bos=True` (default): every context starts with the tokenizer's BOS token, followed by
  `context_size - 1` corpus tokens; with no BOS token in the vocabulary nothing is prepended.
- Documents are joined with `separator`: "eos" (default; the EOS token between documents),
  "bos", or "none". The tokenizer's own special tokens (e.g. BERT's [CLS]/[SEP]) are not added.
- A document that does not fit continues in the next context; nothing is dropped but the last
  partial context.
Shuffling: document order is shuffled from `seed` where the source allows it, and contexts go
through a shuffle buffer of `shuffle_buffer` contexts seeded from `seed`: the same seed gives the
same batches, and memory is bounded by the buffer, not the corpus.
Splits: every `holdout_every`-th document is held out ("test"); "train" is the rest. A source of
fewer than `holdout_every` documents holds out the last 1/`holdout_every` of its text instead.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any, Literal

import torch

from rama.data.texts import iter_documents
from rama.errors import ConfigError


@dataclass(frozen=True)
class PackConfig:
    """How text becomes `[batch, context_size]` token batches."""

    context_size: int = 128
    prepend_bos: bool = True
    separator: Literal["eos", "bos", "none"] = "eos"
    seed: int | None = 0  # None: keep source order, no shuffling
    shuffle_buffer: int = 2048  # contexts held for shuffling
    split: Literal["train", "test", "all"] = "train"
    holdout_every: int = 50

    def __post_init__(self) -> None:
        if self.context_size < 2:
            raise ConfigError(f"context_size must be at least 2, not {self.context_size}")
        if self.separator not in ("eos", "bos", "none"):
            raise ConfigError(f"separator must be 'eos', 'bos' or 'none', not {self.separator!r}")
        if self.split not in ("train", "test", "all"):
            raise ConfigError(f"split must be 'train', 'test' or 'all', not {self.split!r}")


def select_split(documents: Iterable[str], split: str, every: int) -> Iterator[str]:
    """The documents of `split`: every `every`-th is held out ("test"), "train" is the rest. A
    source of fewer than `every` documents (a 400 KB .txt is about 20) would hold none out, so
    its held-out part is its tail instead: see `tail_split`."""
    iterator = iter(documents)
    head = list(islice(iterator, every))
    if len(head) < every:
        train, test = tail_split(head, every)
        yield from head if split == "all" else test if split == "test" else train
        return
    for index, document in enumerate(chain(head, iterator)):
        held_out = index % every == every - 1
        if split == "all" or (split == "test") == held_out:
            yield document


def tail_split(documents: list[str], every: int) -> tuple[list[str], list[str]]:
    """(train, test) of a small source: "test" is the last 1/`every` of its characters (2% by
    default), cut at a whitespace, and "train" everything before it, so the two never overlap."""
    remaining = max(1, sum(len(document) for document in documents) // every)
    train, test = list(documents), list[str]()
    while train and remaining > 0:
        last = train.pop()
        if len(last) <= remaining:
            test.insert(0, last)
            remaining -= len(last)
            continue
        cut = len(last) - remaining
        space = max(last.rfind(" ", 0, cut + 1), last.rfind("\n", 0, cut + 1))
        cut = space if space >= cut - 200 else cut  # a word boundary when one is near
        if last[:cut].strip():
            train.append(last[:cut].rstrip())
        test.insert(0, last[cut:].lstrip())
        remaining = 0
    return train, test


def _special(tokenizer: Any, kind: str) -> int | None:
    value = getattr(tokenizer, f"{kind}_token_id", None)
    return None if value is None else int(value)


def token_stream(documents: Iterable[str], tokenizer: Any, separator: str, group: int = 64) -> Iterator[int]:
    """All documents' tokens in one stream, separated as configured; tokenised in groups for speed."""
    sep = None if separator == "none" else _special(tokenizer, separator)
    iterator = iter(documents)
    first = True
    while chunk := list(islice(iterator, group)):
        for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            if not first and sep is not None:
                yield sep
            first = False
            yield from ids


def pack(documents: Iterable[str], tokenizer: Any, config: PackConfig) -> Iterator[torch.Tensor]:
    """Contexts `[context_size]` (int64), in corpus order."""
    bos = _special(tokenizer, "bos") if config.prepend_bos else None
    width = config.context_size - (1 if bos is not None else 0)
    buffer: list[int] = []
    for token in token_stream(documents, tokenizer, config.separator):
        buffer.append(token)
        if len(buffer) == width:
            yield torch.tensor(buffer if bos is None else [bos, *buffer], dtype=torch.long)
            buffer = []


def shuffled(items: Iterable[torch.Tensor], buffer_size: int, seed: int) -> Iterator[torch.Tensor]:
    rng = random.Random(seed)
    buffer: list[torch.Tensor] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        index = rng.randrange(buffer_size)
        yield buffer[index]
        buffer[index] = item
    rng.shuffle(buffer)
    yield from buffer


def token_batches(
    tokenizer: Any,
    source: str | Path | None = None,
    *,
    batch_size: int = 8,
    config: PackConfig | None = None,
    max_tokens: int | None = None,
    text_field: str = "text",
) -> Iterator[torch.Tensor]:
    """`[batch_size, context_size]` batches from a corpus (None: the built-in English corpus)."""
    config = config or PackConfig()
    documents = select_split(
        iter_documents(source, text_field=text_field, shuffle_seed=config.seed),
        config.split,
        config.holdout_every,
    )
    contexts = pack(documents, tokenizer, config)
    if config.seed is not None:
        contexts = shuffled(contexts, config.shuffle_buffer, config.seed)
    limit = None if max_tokens is None else max(1, max_tokens // (batch_size * config.context_size))
    batch_iter = (torch.stack(group) for group in _groups(contexts, batch_size))
    yield from islice(batch_iter, limit)


def _groups(items: Iterator[torch.Tensor], size: int) -> Iterator[list[torch.Tensor]]:
    while group := list(islice(items, size)):
        if len(group) == size:
            yield group
