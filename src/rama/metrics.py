"""Metrics with a known answer on small cases (each one is tested against a hand computation)."""

from __future__ import annotations

import torch

from rama.errors import InputError


def _unit_rows(directions: torch.Tensor) -> torch.Tensor:
    return directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def max_cosine(learned: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """For each true direction `[n_true, d]`, its best cosine with any learned direction `[n_learned, d]`."""
    if learned.shape[-1] != true.shape[-1]:
        raise InputError(
            f"directions differ in dimension: learned {learned.shape[-1]}, true {true.shape[-1]}"
        )
    return (_unit_rows(true) @ _unit_rows(learned).T).max(dim=1).values


def mmcs(learned: torch.Tensor, true: torch.Tensor) -> float:
    """Mean max cosine similarity (Sharkey et al. 2022): how well `learned` covers `true`."""
    return float(max_cosine(learned, true).mean())


def fraction_recovered(learned: torch.Tensor, true: torch.Tensor, threshold: float = 0.9) -> float:
    """Share of true directions matched by some learned direction with cosine above `threshold`."""
    return float((max_cosine(learned, true) > threshold).float().mean())


def fvu_tensor(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of variance unexplained of rows `[n, d]`, Σ‖x − x̂‖² / Σ‖x − mean(x)‖², as a 0-d
    tensor (a training step keeps it on the device and in the graph). The one definition of FVU in
    rama; a target with no variance is guarded (its denominator floored at 1e-12), not divided by 0."""
    return unexplained_fraction((reconstruction - target).pow(2).sum(-1), target)


def unexplained_fraction(squared_errors: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """FVU from each row's squared error `[n]` (computed once by a caller that also needs the MSE)."""
    variance = (target - target.mean(0)).pow(2).sum(-1)
    return squared_errors.sum() / variance.sum().clamp_min(1e-12)


def fvu(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """`fvu_tensor` as a Python float."""
    return float(fvu_tensor(reconstruction, target))


def auroc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """Area under the ROC curve of scores `[n_pos]` against `[n_neg]`: the chance that a random positive
    scores above a random negative, a tie counting one half (the Mann-Whitney U / (n_pos n_neg))."""
    if positive.numel() == 0 or negative.numel() == 0:
        raise InputError(
            f"AUROC needs both classes; got {positive.numel()} positive, {negative.numel()} negative"
        )
    pos, neg = positive.double().flatten()[:, None], negative.double().flatten()[None, :]
    return float(((pos > neg).double() + 0.5 * (pos == neg).double()).mean())
