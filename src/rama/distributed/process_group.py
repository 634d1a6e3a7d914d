"""Joining (and leaving) the process group torchrun describes, and who this process is in it.

torchrun (or SLURM's `srun torchrun`) starts one process per rank and tells each `RANK`,
`WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT`. Without them, or with `WORLD_SIZE=1`,
nothing is initialised and every helper of `rama.distributed` is a no-op: the single-process path
runs exactly the code it ran before distributed training existed.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from rama.errors import ConfigError

DEFAULT_TIMEOUT_S = (
    600.0  # torch's own default is 30 min (gloo) / 10 min (nccl): a dead rank should cost less
)
BACKENDS = ("auto", "gloo", "nccl")


@dataclass(frozen=True)
class DistributedConfig:
    """How ranks talk: the backend and how long any collective may wait for the others.

    From the environment (`from_env`): `RAMA_DIST_BACKEND` (auto, gloo or nccl; auto = nccl when
    training on CUDA, else gloo) and `RAMA_DIST_TIMEOUT` (seconds, default 600)."""

    backend: str = "auto"
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"RAMA_DIST_BACKEND must be one of {', '.join(BACKENDS)}; got {self.backend!r}")
        if not self.timeout_s > 0:
            raise ConfigError(f"RAMA_DIST_TIMEOUT must be a positive number of seconds; got {self.timeout_s}")

    @classmethod
    def from_env(cls) -> DistributedConfig:
        raw = os.environ.get("RAMA_DIST_TIMEOUT", str(DEFAULT_TIMEOUT_S))
        try:
            timeout = float(raw)
        except ValueError:
            raise ConfigError(f"RAMA_DIST_TIMEOUT must be a number of seconds; got {raw!r}") from None
        return cls(os.environ.get("RAMA_DIST_BACKEND", "auto").lower(), timeout)


@dataclass(frozen=True)
class World:
    """This process's place among the ranks; `peers[r]` is rank r's (host, pid), for naming a dead one."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = ""
    timeout_s: float = DEFAULT_TIMEOUT_S
    peers: tuple[tuple[str, int], ...] = ()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_STATE: dict[str, World] = {}
_BROKEN: set[bool] = set()  # non-empty once a collective has failed


def world() -> World:
    """The current world: rank 0 of 1 unless `setup_distributed` joined a process group."""
    return _STATE.get("world", World())


@contextlib.contextmanager
def alone() -> Iterator[World]:
    """Inside the block `world()` is rank 0 of 1, so every collective is a no-op: for work one rank
    does by itself inside a process group (the SAEs of the sites it alone trains). Not thread-safe:
    no other thread of this process may run collectives meanwhile. The group is restored after."""
    saved = _STATE.get("world")
    _STATE["world"] = World()
    try:
        yield _STATE["world"]
    finally:
        if saved is None:
            _STATE.pop("world", None)
        else:
            _STATE["world"] = saved


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer (torchrun sets it); got {raw!r}") from None


def choose_backend(config: DistributedConfig, device: str) -> str:
    """gloo on the CPU, nccl on CUDA; nccl asked for where it cannot run is refused before any work."""
    on_cuda = torch.device(device).type == "cuda"
    backend = config.backend if config.backend != "auto" else ("nccl" if on_cuda else "gloo")
    if backend == "nccl" and not (torch.cuda.is_available() and dist.is_nccl_available()):
        raise ConfigError(
            "RAMA_DIST_BACKEND=nccl needs CUDA GPUs and a torch built with NCCL; this machine has "
            f"{torch.cuda.device_count()} CUDA device(s). Use RAMA_DIST_BACKEND=gloo (or auto) "
            "to train on the CPU"
        )
    if backend == "nccl" and not on_cuda:
        raise ConfigError(
            "nccl moves CUDA tensors only: train with --device cuda, or use RAMA_DIST_BACKEND=gloo"
        )
    return backend


def setup_distributed(device: str = "cpu", config: DistributedConfig | None = None) -> World:
    """Join the process group torchrun's environment describes (once; later calls return it).

    A single process (no `WORLD_SIZE`, or 1) joins nothing. On CUDA each rank uses `cuda:LOCAL_RANK`.
    Every collective of the group waits at most `timeout_s`, then fails (see `collectives`)."""
    if "world" in _STATE:
        return _STATE["world"]
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return World()
    config = config or DistributedConfig.from_env()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < size:
        raise ConfigError(f"RANK must be in 0..WORLD_SIZE-1 = 0..{size - 1}; got {rank}")
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={size} but {' and '.join(missing)} not set: start the ranks with torchrun "
            "(`torchrun --nproc-per-node N -m rama ...`), which sets them"
        )
    backend = choose_backend(config, device)
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    timeout = timedelta(seconds=config.timeout_s)
    dist.init_process_group(backend, rank=rank, world_size=size, timeout=timeout)
    peers: list[tuple[str, int] | None] = [None] * size
    dist.all_gather_object(peers, (socket.gethostname(), os.getpid()))
    known = tuple(peer for peer in peers if peer is not None)
    _STATE["world"] = World(rank, size, local_rank, backend, config.timeout_s, known)
    atexit.register(leave_at_exit)
    return _STATE["world"]


def mark_broken() -> None:
    """Record that a collective failed: the group has lost a peer and cannot be torn down cleanly."""
    _BROKEN.add(True)


def shutdown_distributed() -> None:
    """Leave the process group (when a run ends); a no-op when none was joined, and after a failed
    collective, whose group is left to the process's exit (`leave_at_exit`)."""
    _STATE.pop("world", None)
    if not _BROKEN and dist.is_available() and dist.is_initialized():
        with contextlib.suppress(RuntimeError):  # a peer already gone: nothing left to close cleanly
            dist.destroy_process_group()


def leave_at_exit() -> None:
    """At exit: leave the group, or, after a failed collective, end the process with status 1 at once.

    A process whose gloo peer died aborts now and then while the interpreter shuts down ("terminate
    called without an active exception": SIGABRT instead of the one-line error and status 1; 5 times
    in 115 killed-peer runs, with or without destroying the group first), so it skips that teardown."""
    if not _BROKEN:
        shutdown_distributed()
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(1)
