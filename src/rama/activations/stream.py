"""Streaming activations: a harvesting thread feeds a shuffle buffer that training draws from.

Memory is the buffer (`buffer_tokens × width` per site), whatever the token budget; every
activation is used once. Deterministic from the seed: the producer is FIFO and the draws seeded.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import replace
from pathlib import Path

import torch

from rama.activations.batches import check_rank
from rama.activations.defaults import SHUFFLE_BUFFER_TOKENS, STATS_SAMPLE_TOKENS
from rama.activations.harvest import Chunk, HarvestConfig, kept_activations
from rama.activations.shuffle import Prefetcher, ShuffleBuffer, take_rows
from rama.hooks.model import HookedModel

Pair = tuple[torch.Tensor, torch.Tensor]


class PrimedBatches:
    """An iterator whose first batch is already drawn (so the shuffle buffer is full before a
    progress bar starts timing); `close()` stops the stream and its harvesting thread."""

    def __init__(self, batches: Generator[Pair, None, None]) -> None:
        self.rest = batches
        self.first: Pair | None = next(batches, None)

    def __iter__(self) -> Iterator[Pair]:
        return self

    def __next__(self) -> Pair:
        if self.first is not None:
            first, self.first = self.first, None
            return first
        return next(self.rest)

    def close(self) -> None:
        self.rest.close()


class StreamingBatches:
    """A restartable `BatchSource` harvesting while it trains: `from_step(s)` replays up to step s.

    Rank r of `world_size` harvests only token batches r, r + world_size, ... (each rank runs the
    model on its own share). `inputs`/`targets` are the first rows of the whole stream, the same
    on every rank. After a stream, `harvested_tokens` and `harvest_seconds` say how many rows it
    harvested and how long the harvesting thread spent doing it (overlapping training)."""

    def __init__(
        self,
        model: HookedModel,
        site: str,
        site_out: str | None,
        harvest_config: HarvestConfig,
        batch_size: int,
        buffer_tokens: int = SHUFFLE_BUFFER_TOKENS,
        corpus: str | Path | None = None,
        seed: int = 0,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        check_rank(rank, world_size)
        self.model, self.site, self.site_out = model, site, site_out
        self.harvest_config, self.corpus = replace(harvest_config, progress=False), corpus
        self.buffer = ShuffleBuffer(max(buffer_tokens, batch_size), batch_size, seed + rank)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.harvested_tokens, self.harvest_seconds = 0, 0.0
        sample = take_rows(self.chunks(rank=0, world_size=1), [], min(buffer_tokens, STATS_SAMPLE_TOKENS))
        self.harvested_tokens, self.harvest_seconds = 0, 0.0  # the sample is not training data
        self.inputs = sample[site]
        self.targets = sample[site_out] if site_out else None

    @property
    def sites(self) -> list[str]:
        return [self.site] + ([self.site_out] if self.site_out else [])

    def chunks(self, rank: int | None = None, world_size: int | None = None) -> Iterator[Chunk]:
        """This rank's activations in harvest order (before shuffling), counted and timed."""
        rank = self.rank if rank is None else rank
        world_size = self.world_size if world_size is None else world_size
        produced = kept_activations(
            self.model, self.sites, self.harvest_config, self.corpus, rank=rank, world_size=world_size
        )
        while True:
            start = time.perf_counter()
            chunk = next(produced, None)
            self.harvest_seconds += time.perf_counter() - start
            if chunk is None:
                return
            self.harvested_tokens += next(iter(chunk.values())).shape[0]
            yield chunk

    def from_step(self, step: int) -> PrimedBatches:
        self.harvested_tokens, self.harvest_seconds = 0, 0.0
        return PrimedBatches(self._batches(step))

    def _batches(self, step: int) -> Generator[Pair, None, None]:
        # Inside the caller's `with model.hooks(...)` block the caller's thread holds the model, and a
        # background harvest would wait for it forever: then harvest in this thread (no overlap).
        in_thread = self.model.runs_in_this_thread_only()
        prefetcher = None if in_thread else Prefetcher(self.chunks())
        chunks = self.chunks() if prefetcher is None else iter(prefetcher)
        try:
            for index, batch in enumerate(self.buffer.batches(chunks)):
                if index < step:
                    continue
                x = batch[self.site]
                yield x, (batch[self.site_out] if self.site_out else x)
        finally:  # also when training stops early: no harvesting forward may outlive the stream
            if prefetcher is not None:
                prefetcher.close()
