"""A draw-and-replace shuffle buffer over activation chunks, and a background prefetcher.

The buffer holds `capacity` rows (per site). Each step draws `batch_size` random rows, hands them
out and overwrites them with fresh rows, so every row is used exactly once and batches mix tokens
from across the buffer's window. Deterministic from the seed: draws come from a seeded generator.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from rama.activations.harvest import Chunk
from rama.errors import InputError

_END = object()


def take_rows(chunks: Iterator[Chunk], pending: list[Chunk], n: int) -> Chunk:
    """Exactly n rows from `pending` then `chunks` (fewer only at the end of the stream); a chunk's
    remainder goes back onto `pending`. `{}` when nothing is left."""
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


@dataclass
class ShuffleBuffer:
    """Draw-and-replace buffer over several sites at once (same token rows for every site)."""

    capacity: int
    batch_size: int
    seed: int = 0

    def batches(self, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
        """Batches of `batch_size` rows until fewer than one batch is left."""
        generator = torch.Generator().manual_seed(self.seed)
        pending: list[Chunk] = []
        buffer = take_rows(chunks, pending, self.capacity)
        if not buffer:
            raise InputError("the activation stream is empty: the corpus gave no batch of tokens")
        while (size := next(iter(buffer.values())).shape[0]) >= self.batch_size:
            rows = torch.randperm(size, generator=generator)[: self.batch_size]
            yield {site: values[rows] for site, values in buffer.items()}
            fresh = take_rows(chunks, pending, self.batch_size)
            if fresh and next(iter(fresh.values())).shape[0] == self.batch_size:
                for site, values in buffer.items():
                    values[rows] = fresh[site]
                continue
            keep = torch.ones(size, dtype=torch.bool)  # the stream ran dry: drain what is left
            keep[rows] = False
            buffer = {s: torch.cat([v[keep], *([fresh[s]] if fresh else [])]) for s, v in buffer.items()}


class Prefetcher:
    """Runs a chunk iterator in a background thread, a few chunks ahead; `close()` stops and joins it.

    The producer runs model forwards, so it must be closed before the model is used again elsewhere
    (a `HookedModel` runs one forward at a time); `StreamingBatches` closes it when its stream ends.
    PyTorch releases the GIL inside ops, so harvesting overlaps with training.
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
