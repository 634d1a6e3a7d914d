"""Writing so that nothing is ever half-written: stage next to the target, then rename into place.

Staged files and folders get the modes a plain `open` / `mkdir` would give them under the user's
umask (the temp-file helpers alone would make them private: 0600 files, 0700 folders), so results
are as readable as anything else the user writes.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rama.errors import OutputError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux's /proc), else by
    setting and restoring it under a lock (`os.umask` can only be read by replacing it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open(path, "w")` would give a new file: 0o666 less the umask."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode `mkdir` would give a new folder: 0o777 less the umask."""
    return 0o777 & ~current_umask()


@contextmanager
def staged_file(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a uniquely named staging path beside `path` (ending in `suffix`, e.g. `.png` for a
    writer that infers the format); when the block succeeds it takes the umask's mode and replaces
    `path` in one rename; when it fails it is removed and `path` is untouched."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=staging_prefix(out), suffix=suffix, dir=out.parent)
    os.close(handle)
    staging = Path(name)
    try:
        yield staging
        staging.chmod(file_mode())
        os.replace(staging, out)
    finally:
        staging.unlink(missing_ok=True)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text through a staging file beside `path`, then rename it into place."""
    with staged_file(path) as staging:
        staging.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write bytes through a staging file beside `path`, then rename it into place."""
    with staged_file(path) as staging:
        staging.write_bytes(data)
    return Path(path)


def check_empty_output(out: str | os.PathLike[str]) -> Path:
    """`out` as a Path, refused when it is a file or a folder that holds files: call it before
    minutes of work whose result `staged_folder` will write there."""
    final = Path(out)
    if final.is_file() or (final.is_dir() and any(final.iterdir())):
        raise OutputError(f"{str(final)!r} already holds files; choose another --out or remove it")
    return final


def staging_prefix(final: Path) -> str:
    """Every staging file or folder of `final` is named `.<name>.` + tempfile's 8 random characters."""
    return f".{final.name}."


def remove_stale_staging(out: str | os.PathLike[str]) -> list[Path]:
    """Delete the staging files and folders (`.<name>.` + 8 random characters, any suffix) that a write of
    `out` killed midway left beside it; other dot-names are left alone. Call it only while holding
    `out`'s lock (`rama.locking.exclusive`): then no live writer owns them."""
    final = Path(out)
    pattern = re.compile(re.escape(staging_prefix(final)) + r"[a-z0-9_]{8}(\..*)?")
    stale = [p for p in final.parent.glob(staging_prefix(final) + "*") if pattern.fullmatch(p.name)]
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


@contextmanager
def staged_folder(out: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside `out`; on success it replaces `out` in one rename.
    A folder that already holds files is refused unless `overwrite`."""
    final = Path(out)
    if not overwrite:
        check_empty_output(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix(final), dir=final.parent))
    staging.chmod(folder_mode())
    try:
        yield staging
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
