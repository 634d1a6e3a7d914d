"""The shuffle buffer: every activation used exactly once, batches mixed, order reproducible."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from rama.activations import Prefetcher, ShuffleBuffer


def chunks(n: int, size: int) -> Iterator[dict[str, torch.Tensor]]:
    for start in range(0, n, size):
        rows = torch.arange(start, min(n, start + size), dtype=torch.float32)[:, None]
        yield {"x": rows, "y": -rows}


def test_every_row_once_across_sites_and_reproducible() -> None:
    buffer = ShuffleBuffer(capacity=64, batch_size=16, seed=3)
    batches = list(buffer.batches(iter(Prefetcher(chunks(1000, 37)))))
    seen = torch.cat([b["x"] for b in batches]).flatten()
    assert len(batches) == 1000 // 16 and seen.unique().numel() == seen.numel()  # no row twice
    assert all(torch.equal(b["y"], -b["x"]) for b in batches)  # sites stay aligned row by row
    first = batches[0]["x"].flatten()
    assert first.max() - first.min() > 16  # mixed across the buffer, not consecutive rows
    again = list(ShuffleBuffer(capacity=64, batch_size=16, seed=3).batches(chunks(1000, 37)))
    assert all(torch.equal(a["x"], b["x"]) for a, b in zip(batches, again, strict=True))


def test_prefetcher_surfaces_producer_errors() -> None:
    def failing() -> Iterator[dict[str, torch.Tensor]]:
        yield {"x": torch.zeros(1, 1)}
        raise RuntimeError("harvest broke")

    import pytest

    with pytest.raises(RuntimeError, match="harvest broke"):
        list(Prefetcher(failing()))


def test_closing_the_prefetcher_stops_its_producer() -> None:
    produced: list[int] = []

    def endless() -> Iterator[dict[str, torch.Tensor]]:
        i = 0
        while True:
            produced.append(i)
            yield {"x": torch.full((1, 1), float(i))}
            i += 1

    prefetcher = Prefetcher(endless(), depth=2)
    first = next(iter(prefetcher))
    prefetcher.close()
    count = len(produced)
    assert not prefetcher.thread.is_alive() and first["x"].item() == 0
    assert count <= 5 and len(produced) == count  # nothing more is produced after close()
