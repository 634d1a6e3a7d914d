"""Tokens per second of TopK SAE training in one process and on 2 ranks (gloo, CPU), data parallel
and latent-sharded, on seeded Gaussian activations (the throughput does not depend on the data).

    python benchmarks/sae_parallel.py [--d-in 256] [--width 8192] [--k 32] [--batch 1024] [--steps 40]

Each configuration starts its ranks as real processes with torchrun's environment variables, one
thread each. The timed span is the training loop only (`fit`'s own tokens/s in its last metrics line: from the
loop's start to the last step, so no initialisation and no final gather). On a 2-core
machine 2 ranks use both cores; a third process (this one) only waits.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def worker(out: Path, args: argparse.Namespace, parallel: str) -> None:
    """One rank: train, then rank 0 leaves the metrics in out/checkpoint."""
    torch.set_num_threads(1)
    from rama.sae import fit

    generator = torch.Generator().manual_seed(0)
    data = torch.randn(args.batch * 8, args.d_in, generator=generator)
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    batch = args.batch // ranks if parallel == "data" else args.batch  # the same global batch
    fit(data, architecture="topk", d_sae=args.width, k=args.k, batch_size=batch, parallel=parallel,
        total_tokens=args.batch * args.steps, log_every=args.steps, checkpoint_every=10**9,
        checkpoint_dir=str(out / "checkpoint"), progress=False)  # fmt: skip


def launch(args: argparse.Namespace, size: int, parallel: str) -> float:
    """Tokens/s of one configuration (rank 0's metrics line at the last step)."""
    out = Path(tempfile.mkdtemp(prefix="sae_parallel_"))
    command = [sys.executable, __file__, "--worker", str(out), "--parallel", parallel, *sys.argv[1:]]
    ranks = []
    for rank in range(size):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29613",
               "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(size)}  # fmt: skip
        ranks.append(subprocess.Popen(command, env=env))
    if any(rank.wait() for rank in ranks):
        raise SystemExit(f"a rank of {size} ({parallel}) failed")
    lines = (out / "checkpoint" / "metrics.jsonl").read_text().splitlines()
    return float(json.loads(lines[-1])["tokens_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--d-in", type=int, default=256)
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1024, help="global batch")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--worker", type=Path, default=None)
    parser.add_argument("--parallel", default="latents")
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args, args.parallel)
        return
    results = {
        f"{parallel}, {size} process(es)": launch(args, size, parallel)
        for size, parallel in ((1, "data"), (1, "latents"), (2, "data"), (2, "latents"))
    }
    print(f"d_in {args.d_in}, d_sae {args.width}, k {args.k}, global batch {args.batch}, {args.steps} steps")
    for name, rate in results.items():
        print(f"{name:24s} {rate:10,.0f} tokens/s")


if __name__ == "__main__":
    main()
