"""What every SAE benchmark against the peers shares: the activations, the batches, the held-out
scores, the timed span, the machine line and the table, so each trainer is measured the same way.

Activations are SmolLM2-135M `blocks.6.hook_resid_post` on the built-in corpus (special tokens
excluded), harvested once and cached under /tmp (the peers' venv reads the same file).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

SITE = "blocks.6.hook_resid_post"
HELD_OUT = 8192
Reconstruct = Callable[[torch.Tensor], torch.Tensor]


def activations(tokens: int, cache_dir: str = "/tmp") -> tuple[torch.Tensor, torch.Tensor]:
    """(train `[tokens - 8192, 576]`, held-out `[8192, 576]`) layer-6 activations, cached on disk."""
    path = Path(cache_dir) / f"rama-bench-smollm2-l6-{tokens}.pt"
    if not path.exists():
        import rama
        from rama.activations import HarvestConfig, harvest

        model = rama.load("smollm2-135m")
        data = harvest(model, [SITE], HarvestConfig(tokens=tokens, progress=False))[SITE]
        staging = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(data.contiguous(), staging)
        staging.replace(path)
    data = torch.load(path)
    return data[:-HELD_OUT], data[-HELD_OUT:]


def batches(data: torch.Tensor, batch_size: int, steps: int, seed: int = 0) -> list[torch.Tensor]:
    """The same shuffled batches for every trainer that takes batches from the harness."""
    generator = torch.Generator().manual_seed(seed)
    out: list[torch.Tensor] = []
    while len(out) < steps:
        order = torch.randperm(data.shape[0], generator=generator)
        out += [data[order[i : i + batch_size]] for i in range(0, data.shape[0] - batch_size + 1, batch_size)]
    return out[:steps]


def held_out_scores(reconstruct: Reconstruct, codes: Reconstruct, x: torch.Tensor) -> dict[str, float]:
    """FVU against the held-out mean, L0, and the fraction of latents that never fire on `x`
    (dead over the held-out set: the same measure for every library, whatever its own window)."""
    with torch.no_grad():
        error = (reconstruct(x) - x).pow(2).sum()
        active = codes(x) > 0
    return {
        "fvu": float(error / (x - x.mean(0)).pow(2).sum()),
        "dead_fraction": float(1 - active.any(0).float().mean()),
        "l0": float(active.sum(-1).float().mean()),
    }


def timed(run: Callable[[], Any]) -> tuple[Any, float]:
    """`run()`'s result and its wall seconds: the one span every trainer is timed over."""
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def load() -> str:
    """The 1/5/15-minute load averages: the machine is shared, so each table says how busy it was."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def machine() -> str:
    """CPU model, threads, torch version and the load when the line was written."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next(
            (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")),
            "",
        )
    except OSError:
        cpu = ""
    return (
        f"{cpu or platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, load {load()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


def table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """A markdown table."""
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def run_arguments(description: str | None) -> argparse.ArgumentParser:
    """The options every SAE-on-fixed-activations benchmark takes (run size and SAE shape)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=409_600)
    parser.add_argument("--width", type=int, default=9216)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument(
        "--harvest", type=int, default=73_728, help="activations harvested (train + 8,192 test)"
    )
    return parser
