"""Metrics with a known answer on small cases (each one is tested against a hand computation)."""

from __future__ import annotations

import torch


def _unit_rows(directions: torch.Tensor) -> torch.Tensor:
    return directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def max_cosine(learned: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """For each true direction `[n_true, d]`, its best cosine with any learned direction `[n_learned, d]`."""
    if learned.shape[-1] != true.shape[-1]:
        raise ValueError(
            f"directions differ in dimension: learned {learned.shape[-1]}, true {true.shape[-1]}"
        )
    return (_unit_rows(true) @ _unit_rows(learned).T).max(dim=1).values


def mmcs(learned: torch.Tensor, true: torch.Tensor) -> float:
    """Mean max cosine similarity (Sharkey et al. 2022): how well `learned` covers `true`."""
    return float(max_cosine(learned, true).mean())


def fraction_recovered(learned: torch.Tensor, true: torch.Tensor, threshold: float = 0.9) -> float:
    """Share of true directions matched by some learned direction with cosine above `threshold`."""
    return float((max_cosine(learned, true) > threshold).float().mean())


def fvu(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of variance unexplained: Σ‖x − x̂‖² / Σ‖x − mean(x)‖² over rows."""
    error = (reconstruction - target).pow(2).sum()
    variance = (target - target.mean(0)).pow(2).sum()
    return float(error / variance.clamp_min(1e-12))
