"""One rank of a small data-parallel SAE run, started by the tests as a real process (plain
`python` with torchrun's environment variables, or under torchrun itself).

`python ddp_worker.py OUT [--pause-at STEP]`: trains a TopK SAE on seeded activations (the same
tensor on every rank) with its checkpoint in OUT/checkpoint and saves this rank's final weights to
OUT/rank<r>.pt. With `--pause-at`, rank 1 stops before that step (writing OUT/paused) and sleeps,
so a test can kill it at a known point. Errors print as the CLI prints them: one line, exit 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from rama.activations import TensorBatches
from rama.distributed import world
from rama.errors import RamaError
from rama.sae import fit

ROWS, D_IN = 2048, 16
SETTINGS = {
    "architecture": "topk",
    "d_sae": 64,
    "k": 4,
    "total_tokens": 40 * 128,  # 40 steps of a global batch of 128
    "dead_after_tokens": 10**9,  # no latent dies in so short a run: the aux-k term stays 0
    "checkpoint_every": 10,
    "log_every": 5,
    "progress": False,
    "seed": 3,
}


def activations() -> torch.Tensor:
    """`[ROWS, D_IN]` correlated Gaussian rows, the same in every process."""
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(D_IN, D_IN, generator=generator)
    return torch.randn(ROWS, D_IN, generator=generator) @ mixing + 0.5


class PausingBatches(TensorBatches):
    """In-memory epochs whose rank 1 stops for good before step `pause_at` (the test's kill point)."""

    def __init__(self, data: torch.Tensor, batch_size: int, pause_at: int, flag: Path) -> None:
        super().__init__(data, None, batch_size, SETTINGS["seed"], rank=world().rank, world_size=world().size)
        self.pause_at, self.flag = pause_at, flag

    def from_step(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for index, batch in enumerate(super().from_step(step), start=step):
            if index == self.pause_at and world().rank == 1:
                self.flag.write_text(str(index))
                time.sleep(3600)
            yield batch


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--pause-at", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)  # per rank
    args = parser.parse_args()
    from rama.distributed import setup_distributed

    try:
        current = setup_distributed()
        data: torch.Tensor | TensorBatches = activations()
        if args.pause_at is not None:
            data = PausingBatches(activations(), args.batch_size, args.pause_at, args.out / "paused")
        sae = fit(data, batch_size=args.batch_size, checkpoint_dir=str(args.out / "checkpoint"), **SETTINGS)
    except RamaError as error:
        print(f"rama: error: {error}", file=sys.stderr)
        return 1
    torch.save(sae.state_dict(), args.out / f"rank{current.rank}.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
