"""Where training batches come from: the `BatchSource` protocol, rank strides, in-memory epochs.

Data parallelism: every source takes `rank` and `world_size` and yields only its stride of the
global stream (item i goes to rank i mod world_size), so the ranks together see each item exactly
once, none twice and none skipped, and one rank with `world_size=1` sees the whole stream.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

import torch

from rama.errors import ConfigError, InputError

Item = TypeVar("Item")


class BatchSource(Protocol):
    """Where training batches come from. `inputs`/`targets` are (at least) a sample for statistics,
    the same on every rank so that every rank initialises the same SAE."""

    inputs: torch.Tensor
    targets: torch.Tensor | None

    def from_step(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


def check_rank(rank: int, world_size: int) -> None:
    """Refuse a rank outside `0 .. world_size - 1` or a world of fewer than one process."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(
            f"rank must be in 0..world_size-1 and world_size at least 1; got {rank}/{world_size}"
        )


def strided(items: Iterable[Item], rank: int, world_size: int) -> Iterator[Item]:
    """Items rank, rank + world_size, rank + 2·world_size, ... of `items`."""
    check_rank(rank, world_size)
    return itertools.islice(items, rank, None, world_size)


class TensorBatches:
    """Seeded epochs over in-memory activations; step s always yields the same batch.

    The global sequence of batches is one permutation per epoch cut into batches; rank r's step s
    is global batch `s * world_size + r`, so the ranks' steps 0..n-1 are global batches 0..n·world-1.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor | None,
        batch_size: int,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if inputs.ndim != 2:
            raise InputError(f"activations must be [n, d_in]; got shape {tuple(inputs.shape)}")
        if targets is not None and targets.shape[0] != inputs.shape[0]:
            raise InputError(f"targets have {targets.shape[0]} rows but activations have {inputs.shape[0]}")
        if inputs.shape[0] < batch_size:
            raise InputError(f"{inputs.shape[0]} activations are fewer than one batch of {batch_size}")
        check_rank(rank, world_size)
        self.inputs, self.targets, self.batch_size, self.seed = inputs, targets, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.per_epoch = inputs.shape[0] // batch_size

    def from_step(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order_epoch, order = -1, torch.empty(0, dtype=torch.long)
        while True:
            epoch, offset = divmod(step * self.world_size + self.rank, self.per_epoch)
            if epoch != order_epoch:  # one permutation per epoch (of 6 M rows it takes ~0.2 s)
                generator = torch.Generator().manual_seed(self.seed + epoch)
                order_epoch, order = epoch, torch.randperm(self.inputs.shape[0], generator=generator)
            rows = order[offset * self.batch_size : (offset + 1) * self.batch_size].to(self.inputs.device)
            x = self.inputs[rows].float()
            yield x, (x if self.targets is None else self.targets[rows.to(self.targets.device)].float())
            step += 1
