"""Collectives that are no-ops in one process and never hang in several.

Every collective runs under the process group's timeout (`RAMA_DIST_TIMEOUT`, default 600 s). When
one fails (a peer's socket closed because the rank died, or the timeout passed) it raises
`CollectiveError` naming what failed and, when the dead rank ran on this host, which rank it was:
the CLI prints that as one line and exits 1, so no survivor waits forever for a dead peer.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import torch
import torch.distributed as dist

from rama.distributed.process_group import World, mark_broken, world
from rama.errors import RamaError

Result = TypeVar("Result")
Op = Literal["sum", "max", "min"]
OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


class CollectiveError(RamaError, RuntimeError):
    """A collective failed: a rank died, stopped answering, or another rank failed before it."""


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one rank that writes files."""
    return world().is_main


def process_alive(pid: int) -> bool:
    """Whether `pid` runs on this host (a zombie, killed but not yet reaped, counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel instead
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def dead_ranks(current: World, wait_s: float = 2.0) -> list[int]:
    """Ranks on this host whose process is gone; waits briefly, since a killed process closes its
    sockets (which is how the survivors notice) a moment before it is marked dead."""
    host = socket.gethostname()
    deadline = time.monotonic() + wait_s
    while True:
        dead = [
            rank
            for rank, (peer_host, pid) in enumerate(current.peers)
            if rank != current.rank and peer_host == host and not process_alive(pid)
        ]
        if dead or time.monotonic() >= deadline:
            return dead
        time.sleep(0.05)


def failure_message(what: str, current: World, error: BaseException) -> str:
    """One line: which collective failed on which rank, the dead rank(s) if known, what to do."""
    dead = dead_ranks(current)
    detail = str(error).strip().splitlines()[-1][:200] if str(error).strip() else type(error).__name__
    if dead:
        who = ", ".join(f"rank {r} (pid {current.peers[r][1]})" for r in dead)
        cause = f"{who} died"
    else:
        elsewhere = sorted({h for h, _ in current.peers} - {socket.gethostname()})
        cause = (
            f"no rank on this host died; a rank on {', '.join(elsewhere)} may have, or"
            if elsewhere
            else "every rank's process is alive, so one"
        ) + f" did not answer within {current.timeout_s:g} s (RAMA_DIST_TIMEOUT) or failed first"
    return (
        f"rank {current.rank} of {current.size}: {what} failed: {cause}. The run stops here; rerun the "
        f"same command to resume from the last checkpoint ({current.backend}: {detail})"
    )


def guarded(what: str, call: Callable[[], Result]) -> Result:
    """Run one collective; turn the backend's failure into a `CollectiveError` that says what happened."""
    try:
        return call()
    except (RuntimeError, ConnectionError, TimeoutError) as error:
        if isinstance(error, RamaError):
            raise
        mark_broken()
        raise CollectiveError(failure_message(what, world(), error)) from error


def all_reduce_tensor(tensor: torch.Tensor, op: Op = "sum", what: str = "an all-reduce") -> torch.Tensor:
    """`tensor` reduced over every rank, in place (and returned); unchanged in one process."""
    if world().size > 1:
        guarded(what, lambda: dist.all_reduce(tensor, op=OPS[op]))
    return tensor


def all_reduce_mean(tensors: list[torch.Tensor], what: str = "a mean all-reduce") -> None:
    """Replace each tensor by its mean over the ranks, in place, with one collective (the tensors
    are packed into one flat buffer): gradients before the optimiser step, metric terms."""
    size = world().size
    if size <= 1 or not tensors:
        return
    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    guarded(what, lambda: dist.all_reduce(flat, op=dist.ReduceOp.SUM))
    flat.div_(size)
    offset = 0
    for tensor in tensors:
        count = tensor.numel()
        tensor.copy_(flat[offset : offset + count].view_as(tensor))
        offset += count


def broadcast_tensors(tensors: list[torch.Tensor], src: int = 0, what: str = "a broadcast") -> None:
    """Overwrite each tensor, in place, with rank `src`'s copy (every replica starts identical)."""
    if world().size <= 1:
        return
    for tensor in tensors:
        guarded(what, functools.partial(dist.broadcast, tensor, src=src))


def broadcast_object(value: Any, src: int = 0, what: str = "a broadcast") -> Any:
    """Rank `src`'s `value` (any picklable object), on every rank; `value` itself in one process."""
    if world().size <= 1:
        return value
    box = [value]
    guarded(what, lambda: dist.broadcast_object_list(box, src=src))
    return box[0]


def gather_object(value: Any, dst: int = 0, what: str = "a gather") -> list[Any] | None:
    """Every rank's `value` (picklable), in rank order, on rank `dst`; None on the others. One
    process: `[value]`."""
    if world().size <= 1:
        return [value]
    received: list[Any] | None = [None] * world().size if world().rank == dst else None
    guarded(what, lambda: dist.gather_object(value, received, dst=dst))
    return received


def barrier(what: str = "a barrier") -> None:
    """Wait until every rank gets here (at most the timeout); a no-op in one process."""
    if world().size > 1:
        guarded(what, dist.barrier)


def run_on_main(call: Callable[[], Result], what: str) -> Result | None:
    """Run `call` on rank 0 only (checking or locking an output folder); the other ranks wait for it
    and, if it raised, raise too (a `CollectiveError` quoting rank 0's message) instead of starting
    work rank 0 has refused. Returns `call()` on rank 0 and None elsewhere."""
    result: Result | None = None
    failure: BaseException | None = None
    if is_main():
        try:
            result = call()
        except BaseException as error:  # re-raised below, after telling the others
            failure = error
    message = broadcast_object(None if failure is None else f"{type(failure).__name__}: {failure}", what=what)
    if failure is not None:
        raise failure
    if message is not None:
        raise CollectiveError(f"rank {world().rank}: rank 0 refused {what}: {message}")
    return result
