"""Training across processes on torch.distributed: join torchrun's process group, and collectives.

Every helper is a no-op in a single process (no `WORLD_SIZE`, or 1), so code written for several
ranks runs unchanged, and with unchanged numbers, in one. Every collective waits at most the
process group's timeout (`RAMA_DIST_TIMEOUT`, default 600 s) and fails with a `CollectiveError`
that names the dead rank when it can. This package sits in the lowest layer: torch, the standard
library and `rama.errors` only.
"""

from __future__ import annotations

from rama.distributed.collectives import (
    CollectiveError,
    all_reduce_mean,
    all_reduce_tensor,
    barrier,
    broadcast_object,
    broadcast_tensors,
    gather_object,
    is_main,
    run_on_main,
)
from rama.distributed.process_group import (
    DEFAULT_TIMEOUT_S,
    DistributedConfig,
    World,
    alone,
    setup_distributed,
    shutdown_distributed,
    world,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "CollectiveError",
    "DistributedConfig",
    "World",
    "all_reduce_mean",
    "all_reduce_tensor",
    "alone",
    "barrier",
    "broadcast_object",
    "broadcast_tensors",
    "gather_object",
    "is_main",
    "run_on_main",
    "setup_distributed",
    "shutdown_distributed",
    "world",
]
