"""One writer per output: an exclusive, non-blocking lock file beside what is being written.

Two processes writing the same SAE folder or activation cache would both report success over
interleaved files; the second is refused instead. The lock is `fcntl.flock` on `<target>.lock`,
released (and the file removed) when the writer finishes or dies, so a killed run never leaves a
stale lock: the kernel drops flock locks with the process.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rama.errors import OutputError


def lock_path(target: str | os.PathLike[str]) -> Path:
    """Where the lock of `target` lives: `<target>.lock`, beside it."""
    path = Path(target)
    return path.with_name(path.name + ".lock")


@contextmanager
def exclusive(target: str | os.PathLike[str], wait: bool = False) -> Iterator[Path]:
    """Hold the lock of `target` for the block. While another process (or thread) holds it, the
    call is refused with `OutputError`, or with `wait=True` blocks until it is free (cache builds:
    the second builder then finds the first one's result). Re-checks after locking that the file
    was not removed meanwhile by a finishing writer."""
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise OutputError(
                f"{str(target)!r} is being written by another process (it holds {str(path)!r}); "
                "wait for it to finish or choose another output"
            ) from None
        try:
            same = os.fstat(handle).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(handle)  # locked a file its previous holder had just removed: lock the new one
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(handle)
