"""Figures of the ground-truth reproductions (matplotlib, the `plot` extra), written as PNG files."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from rama.errors import InputError
from rama.plotting import pyplot, save_figure
from rama.toys.superposition import STICKY_FRACTIONS, PhaseDiagram, ToyModel


def plot_feature_geometry(model: ToyModel, path: str | os.PathLike[str]) -> Path:
    """Each instance's feature directions W_i in its 2-d hidden space, one panel per sparsity."""
    plt = pyplot()
    if model.W.shape[1] != 2:
        raise InputError(
            f"feature geometry is drawn for 2 hidden dimensions; this model has {model.W.shape[1]}"
        )
    panels = model.W.shape[0]
    figure, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.4), squeeze=False)
    colours = plt.cm.viridis(torch.linspace(0, 0.9, model.W.shape[2]).numpy())
    for i, axis in enumerate(axes[0]):
        for f in range(model.W.shape[2]):
            x, y = float(model.W[i, 0, f]), float(model.W[i, 1, f])
            axis.plot([0, x], [0, y], color=colours[f], lw=2)
            axis.scatter([x], [y], color=colours[f], s=25, label=f"feature {f}" if i == 0 else None)
        axis.set_xlim(-1.3, 1.3)
        axis.set_ylim(-1.3, 1.3)
        axis.set_aspect("equal")
        axis.axhline(0, color="0.85", lw=0.5)
        axis.axvline(0, color="0.85", lw=0.5)
        axis.set_title(f"sparsity {float(model.sparsity[i]):.2f}")
        axis.set_xlabel("hidden dim 1")
    axes[0][0].set_ylabel("hidden dim 2")
    figure.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.suptitle("Toy model, 5 features in 2 dimensions (importance 0.9^i): columns of W")
    return save_figure(figure, path)


def plot_phase_diagram(diagram: PhaseDiagram, path: str | os.PathLike[str]) -> Path:
    plt = pyplot()
    from matplotlib.colors import ListedColormap

    figure, axis = plt.subplots(figsize=(5.6, 4.6))
    colours = ListedColormap(["#f0f0f0", "#3b75af", "#c03d3e"])
    axis.pcolormesh(
        diagram.importances.numpy(),
        diagram.densities.numpy(),
        diagram.labels.numpy(),
        cmap=colours,
        vmin=-0.5,
        vmax=2.5,
        shading="nearest",
    )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("relative importance of the extra feature")
    axis.set_ylabel("feature density (1 − sparsity)")
    axis.set_title("2 features in 1 dimension: what the extra feature gets")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours(i)) for i in range(3)]
    names = ["not represented", "dedicated dimension", "superposition"]
    axis.legend(handles, names, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    return save_figure(figure, path)


def plot_dimensionality(model: ToyModel, path: str | os.PathLike[str]) -> Path:
    """Feature dimensionality of every represented feature against 1/(1 − sparsity)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.2))
    dims, norms = model.dimensionality(), model.feature_norms()
    m_over_n = model.W.shape[1] / model.W.shape[2]
    x_values = 1 / (1 - model.sparsity)
    for i in range(dims.shape[0]):
        kept = dims[i][norms[i] > 0.5]
        jitter = 1 + 0.03 * torch.randn(len(kept), generator=torch.Generator().manual_seed(i))
        axis.scatter((float(x_values[i]) * jitter).numpy(), kept.numpy(), s=6, alpha=0.5, color="#3b75af")
    axis.plot(x_values.numpy(), [m_over_n] * len(x_values), color="0.3", lw=1, ls="--", label="m / n")
    for fraction in STICKY_FRACTIONS:
        axis.axhline(fraction, color="#c03d3e", lw=0.6, alpha=0.5)
        axis.text(float(x_values.max()) * 1.15, fraction, _fraction_label(fraction), fontsize=7, va="center")
    axis.set_xscale("log")
    axis.set_ylim(0, 1.05)
    axis.set_xlabel("1 / (1 − sparsity)")
    axis.set_ylabel("feature dimensionality D_i")
    n, m = model.W.shape[2], model.W.shape[1]
    axis.set_title(f"Feature dimensionality, {n} features in {m} dimensions (represented features)")
    axis.legend(loc="upper right", fontsize=8)
    return save_figure(figure, path)


def _fraction_label(value: float) -> str:
    from fractions import Fraction

    return str(Fraction(value).limit_denominator(8))


def plot_training_curves(
    curves: dict[str, list[dict[str, float]]], key: str, path: str | os.PathLike[str], title: str, ylabel: str
) -> Path:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 4))
    for name, curve in curves.items():
        axis.plot([p["step"] for p in curve], [p[key] for p in curve], label=name, lw=1.5)
    axis.set_xlabel("training step")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    return save_figure(figure, path)
