"""Starting the ranks of a test run as real processes: a free port, torchrun's environment, logs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from net_helpers import free_port

WORKER = Path(__file__).with_name("ddp_worker.py")


def start_ranks(out: Path, *args: str, size: int = 2, timeout_s: int = 300) -> list[subprocess.Popen[str]]:
    """`size` worker processes with the variables torchrun would set, each logging to out/rank<r>.log."""
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ranks = []
    for rank in range(size):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(size),
            "RAMA_DIST_TIMEOUT": str(timeout_s),
            "OMP_NUM_THREADS": "1",
        }
        log = open(out / f"rank{rank}.log", "w")  # noqa: SIM115 (closed when the process ends)
        command = [sys.executable, str(WORKER), str(out), *args]
        ranks.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True))
    return ranks


def run_torchrun(
    out: Path, *args: str, size: int = 2, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """The worker under torchrun itself (`--standalone`: torchrun picks a free port)."""
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={size}",
               str(WORKER), str(out), *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAMA_DIST_TIMEOUT": "60"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def exit_code(body: Callable[[], object]) -> int:
    """A worker's exit status: 0, or 1 after printing rama's one-line error as the CLI does."""
    from rama.errors import RamaError

    try:
        body()
    except RamaError as error:
        print(f"rama: error: {error}", file=sys.stderr)
        return 1
    return 0
