"""Heatmaps of patching results (matplotlib, the `plot` extra), written as PNG files."""

from __future__ import annotations

import os
from pathlib import Path

from rama.interventions.patching import PatchResult
from rama.plotting import pyplot, save_figure


def plot_patching(
    result: PatchResult, path: str | os.PathLike[str], title: str = "", normalised: bool = True
) -> Path:
    """`[layer, pos|head]` heatmap; normalised scores centre on 0 (corrupted) with 1 = clean."""
    plt = pyplot()
    values = (result.normalised() if normalised else result.values).numpy()
    rows, cols = result.dims
    figure, axis = plt.subplots(
        figsize=(max(4.0, 0.45 * values.shape[1] + 2), max(3.0, 0.3 * values.shape[0] + 1.5))
    )
    limit = max(1.0, float(abs(values[values == values]).max())) if normalised else float(abs(values).max())
    image = axis.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    axis.set_xticks(
        range(values.shape[1]), result.labels[cols], rotation=90 if cols == "pos" else 0, fontsize=7
    )
    axis.set_yticks(range(values.shape[0]), result.labels[rows], fontsize=7)
    axis.set_xlabel(cols)
    axis.set_ylabel(rows)
    what = "normalised patching score (0 corrupted, 1 clean)" if normalised else "metric"
    figure.colorbar(image, ax=axis, label=what)
    axis.set_title(title or f"{result.direction} activation patching: {result.sweep}", fontsize=10)
    return save_figure(figure, path)
