"""Streaming activations: a harvesting thread feeds a shuffle buffer that training draws from.

Memory is the buffer (`buffer_tokens × width` per site), whatever the token budget. Each step draws
`batch_size` random rows, hands them to training and overwrites them with fresh activations, so
every activation is used exactly once and batches mix tokens from across the buffer's window.
Harvesting runs in its own thread (PyTorch releases the GIL inside ops), overlapping with training.
Deterministic from the seed: the producer is FIFO and the draws come from a seeded generator.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from rama.hooks.model import HookedModel
from rama.sae.harvest import HarvestConfig, batches_with_activations, keep_mask

Chunk = dict[str, torch.Tensor]
_END = object()


def produce(
    model: HookedModel, sites: list[str], config: HarvestConfig, corpus: str | Path | None
) -> Iterator[Chunk]:
    """`{site: [n_kept_tokens, d]}` per model batch, special-token positions removed."""
    for tokens, acts in batches_with_activations(model, sites, config, corpus):
        keep = keep_mask(tokens, model.tokenizer, config.exclude_special_tokens)
        yield {site: value[keep.to(value.device)].float() for site, value in acts.items()}


class Prefetcher:
    """Runs a chunk iterator in a background thread, a few chunks ahead; `close()` stops and joins it.

    The producer runs model forwards, so it must be closed before the model is used again elsewhere
    (a `HookedModel` runs one forward at a time); `StreamingBatches` closes it when its stream ends.
    """

    def __init__(self, chunks: Iterator[Chunk], depth: int = 4) -> None:
        self.queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(chunks,), daemon=True)
        self.thread.start()

    def _put(self, item: object) -> bool:
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, chunks: Iterator[Chunk]) -> None:
        try:
            for chunk in chunks:
                if not self._put(chunk):
                    return
        except BaseException as error:  # surfaced to the consumer
            self.error = error
        finally:
            self._put(_END)

    def __iter__(self) -> Iterator[Chunk]:
        while (item := self.queue.get()) is not _END:
            yield item  # type: ignore[misc]
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()


@dataclass
class ShuffleBuffer:
    """Draw-and-replace buffer over several sites at once (same token rows for every site)."""

    capacity: int
    batch_size: int
    seed: int = 0

    def batches(self, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
        generator = torch.Generator().manual_seed(self.seed)
        pending: list[Chunk] = []
        buffer = self._fill(chunks, pending)
        while (size := next(iter(buffer.values())).shape[0]) >= self.batch_size:
            rows = torch.randperm(size, generator=generator)[: self.batch_size]
            yield {site: values[rows] for site, values in buffer.items()}
            fresh = self._take(chunks, pending, self.batch_size)
            if fresh and next(iter(fresh.values())).shape[0] == self.batch_size:
                for site, values in buffer.items():
                    values[rows] = fresh[site]
                continue
            keep = torch.ones(size, dtype=torch.bool)  # the stream ran dry: drain what is left
            keep[rows] = False
            buffer = {s: torch.cat([v[keep], *([fresh[s]] if fresh else [])]) for s, v in buffer.items()}

    def _fill(self, chunks: Iterator[Chunk], pending: list[Chunk]) -> Chunk:
        buffer = self._take(chunks, pending, self.capacity)
        if not buffer:
            raise ValueError("the activation stream is empty")
        return buffer

    @staticmethod
    def _take(chunks: Iterator[Chunk], pending: list[Chunk], n: int) -> Chunk:
        """Exactly n rows (fewer only at the end of the stream), keeping any remainder pending."""
        parts: list[Chunk] = []
        have = 0
        while have < n:
            chunk = pending.pop() if pending else next(chunks, None)
            if chunk is None:
                break
            rows = next(iter(chunk.values())).shape[0]
            if have + rows > n:
                cut = n - have
                parts.append({s: v[:cut] for s, v in chunk.items()})
                pending.append({s: v[cut:] for s, v in chunk.items()})
                have = n
            else:
                parts.append(chunk)
                have += rows
        if not parts:
            return {}
        return {site: torch.cat([p[site] for p in parts]) for site in parts[0]}


class StreamingBatches:
    """A restartable stream of training batches for `fit`: `from_step(s)` replays up to step s."""

    def __init__(
        self,
        model: HookedModel,
        site: str,
        site_out: str | None,
        harvest_config: HarvestConfig,
        batch_size: int,
        buffer_tokens: int = 262_144,
        corpus: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        self.model, self.site, self.site_out = model, site, site_out
        self.harvest_config, self.corpus = harvest_config, corpus
        self.buffer = ShuffleBuffer(max(buffer_tokens, batch_size), batch_size, seed)
        self.batch_size = batch_size
        sample = self._sample(min(buffer_tokens, 65_536))
        self.inputs = sample[site]
        self.targets = sample[site_out] if site_out else None

    @property
    def sites(self) -> list[str]:
        return [self.site] + ([self.site_out] if self.site_out else [])

    def _sample(self, n: int) -> Chunk:
        """The first n activations, for normalisation statistics and decoder-bias init."""
        return ShuffleBuffer._take(produce(self.model, self.sites, self.harvest_config, self.corpus), [], n)

    def from_step(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        prefetcher = Prefetcher(produce(self.model, self.sites, self.harvest_config, self.corpus))
        try:
            for index, batch in enumerate(self.buffer.batches(iter(prefetcher))):
                if index < step:
                    continue
                x = batch[self.site]
                yield x, (batch[self.site_out] if self.site_out else x)
        finally:  # also when training stops early: no harvesting forward may outlive the stream
            prefetcher.close()
