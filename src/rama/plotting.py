"""Figures as PNG files (matplotlib, the `plot` extra): the Agg backend, and saving through a
staging file so a reader never sees half an image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rama.atomic import staged_file
from rama.errors import RamaError


class MissingExtraError(RamaError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or a clear error naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise MissingExtraError("figures need matplotlib: pip install 'rama-interp[plot]'") from error
    return plt


def save_figure(figure: Any, path: str | os.PathLike[str]) -> Path:
    """Save a matplotlib figure as PNG through a uniquely named staging file, then close it."""
    try:
        with staged_file(path, suffix=".png") as staging:
            figure.savefig(staging, dpi=120, bbox_inches="tight", format="png")
    finally:
        pyplot().close(figure)
    return Path(path)
