"""Batch sources split across ranks: together the ranks see the one-rank stream, each row once."""

from __future__ import annotations

import itertools

import pytest
import torch

from rama.activations import (
    SHUFFLE_BUFFER_TOKENS,
    TensorBatches,
    check_rank,
    stream_buffer_tokens,
    stream_harvest_tokens,
    strided,
)
from rama.errors import ConfigError, RamaError


def rows_of(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[int]:
    return [int(v) for x, _ in batches for v in x[:, 0].tolist()]


def test_tensor_batch_ranks_are_the_one_rank_stream_split_disjointly() -> None:
    data = torch.arange(1000, dtype=torch.float32)[:, None].repeat(1, 3)
    whole = list(itertools.islice(TensorBatches(data, None, 50, seed=4).from_step(0), 40))  # two epochs
    ranks = [
        list(itertools.islice(TensorBatches(data, None, 50, seed=4, rank=r, world_size=2).from_step(0), 20))
        for r in range(2)
    ]
    assert all(torch.equal(ranks[0][i][0], whole[2 * i][0]) for i in range(20))  # rank 0: even steps
    assert all(torch.equal(ranks[1][i][0], whole[2 * i + 1][0]) for i in range(20))
    first_epoch = rows_of(ranks[0][:10]) + rows_of(ranks[1][:10])
    assert sorted(first_epoch) == list(range(1000))  # one epoch over both ranks: every row once
    resumed = next(TensorBatches(data, None, 50, seed=4, rank=1, world_size=2).from_step(7))
    assert torch.equal(resumed[0], ranks[1][7][0])


def test_strides_and_rank_settings() -> None:
    assert list(strided(range(10), 1, 3)) == [1, 4, 7]
    assert sorted(itertools.chain(*(strided(range(10), r, 3) for r in range(3)))) == list(range(10))
    for rank, world in [(2, 2), (-1, 2), (0, 0)]:
        with pytest.raises(ConfigError, match="rank must be in"):
            check_rank(rank, world)
    with pytest.raises(RamaError, match="fewer than one batch"):
        TensorBatches(torch.zeros(10, 2), None, 64, seed=0)


def test_a_small_stream_gets_a_buffer_that_fits_it() -> None:
    assert stream_buffer_tokens(20_000, 512) == 5_000  # a quarter of the run, not 262,144
    assert stream_buffer_tokens(2_000_000, 4096) == SHUFFLE_BUFFER_TOKENS
    assert stream_buffer_tokens(1_000, 512) == 512  # never less than one batch
    assert stream_harvest_tokens(20_000, 512) == 25_000
