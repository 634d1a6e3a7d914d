"""Writing so that nothing is ever half-written: stage next to the target, then rename into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def staged_folder(out: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside `out`; on success it replaces `out` in one rename.
    A folder that already holds files is refused unless `overwrite`."""
    final = Path(out)
    if final.exists() and any(final.iterdir()) and not overwrite:
        raise FileExistsError(f"{str(final)!r} already holds files; choose another --out or remove it")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a result folder is not
    try:
        yield staging
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text through a staging file beside `path`, then rename it into place."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(staging, out)
    return out


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or a clear error naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("figures need matplotlib: pip install 'rama-interp[plot]'") from error
    return plt


def save_figure(figure: Any, path: str | os.PathLike[str]) -> Path:
    """Save a matplotlib figure as PNG through a staging file, then close it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.stem}.tmp.png")
    figure.savefig(staging, dpi=120, bbox_inches="tight")
    os.replace(staging, out)
    pyplot().close(figure)
    return out
