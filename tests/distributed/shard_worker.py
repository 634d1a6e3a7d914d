"""One rank of a small latent-sharded run, started by tests/distributed/test_latent_sharding.py as a
real process with torchrun's environment variables.

`python shard_worker.py OUT`: (1) encodes seeded inputs with this rank's slice of a TopK SAE and
saves the dense codes to OUT/codes<r>.pt (random inputs, latents duplicated across the two slices,
and a tie at the k-th place); (2) trains the ddp_worker run latent-sharded (every rank the same
batches of 128) with its checkpoint in OUT/checkpoint, copying the step-20 checkpoint to OUT/step20
(rank 0), and saves the returned SAE to OUT/rank<r>.pt; (3) trains the same run as a BatchTopK SAE
(no checkpoint) and saves it to OUT/batchtopk<r>.pt. Errors print as the CLI prints them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from ddp_worker import SETTINGS, activations

from rama.activations import TensorBatches
from rama.distributed import setup_distributed, world
from rama.errors import RamaError
from rama.sae import SAE, SAEConfig, TopKConfig, fit
from rama.sae.latent_sharding import LatentShard, ShardLayout

BATCH = 128
SHARDED = {**SETTINGS, "parallel": "latents", "dead_after_tokens": 128, "checkpoint_every": 20}
BATCH_WIDE = {**SHARDED, "architecture": "batchtopk", "total_tokens": 20 * BATCH, "dead_after_tokens": 10**9}


def encoder_cases() -> dict[str, tuple[SAE, torch.Tensor]]:
    """Whole SAEs and inputs `[rows, d_in]` to encode, the same in every process."""
    torch.manual_seed(5)
    wide = SAE.create(SAEConfig(d_in=32, d_sae=512, arch=TopKConfig(k=32)))
    narrow = SAE.create(SAEConfig(d_in=16, d_sae=64, arch=TopKConfig(k=4)))
    x_wide, x_narrow = torch.randn(256, 32), torch.randn(64, 16)
    duplicated = SAE.create(SAEConfig(d_in=16, d_sae=64, arch=TopKConfig(k=4)))
    with torch.no_grad():  # latent 40 (second slice) copies latent 3 (first slice), strongly firing
        duplicated.W_enc[:, 3] = x_narrow[0] * 10
        duplicated.W_enc[:, 40] = duplicated.W_enc[:, 3]
    boundary = SAE.create(SAEConfig(d_in=4, d_sae=8, arch=TopKConfig(k=2)))
    with torch.no_grad():  # x = e0: latent 1 wins, latents 2 and 6 tie for the 2nd place
        boundary.W_enc.zero_()
        boundary.b_enc.copy_(torch.tensor([0.0, 3.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
        boundary.b_dec.zero_()
    return {
        "random_wide": (wide, x_wide),
        "random_narrow": (narrow, x_narrow),
        "duplicated": (duplicated, x_narrow),
        "boundary_tie": (boundary, torch.eye(4)[:1]),
    }


def encode_cases(out: Path) -> None:
    codes = {}
    for name, (sae, x) in encoder_cases().items():
        shard = LatentShard(sae, ShardLayout(world().rank, world().size, sae.cfg.d_sae))
        codes[name] = shard.encode(x)
    torch.save(codes, out / f"codes{world().rank}.pt")


class CopyingBatches(TensorBatches):
    """In-memory epochs (every rank all of them) whose rank 0 copies the step-20 checkpoint."""

    def __init__(self, out: Path) -> None:
        super().__init__(activations(), None, BATCH, SETTINGS["seed"])
        self.out = out

    def from_step(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for index, batch in enumerate(super().from_step(step), start=step):
            if index == 20 and world().is_main:
                shutil.copytree(self.out / "checkpoint", self.out / "step20")
            yield batch


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    out = parser.parse_args().out
    try:
        setup_distributed()
        encode_cases(out)
        folder = str(out / "checkpoint")
        torch.save(fit(CopyingBatches(out), batch_size=BATCH, checkpoint_dir=folder, **SHARDED).state_dict(),
                   out / f"rank{world().rank}.pt")  # fmt: skip
        batch_wide = fit(activations(), batch_size=BATCH, **BATCH_WIDE)
        torch.save(batch_wide.state_dict(), out / f"batchtopk{world().rank}.pt")
    except RamaError as error:
        print(f"rama: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
