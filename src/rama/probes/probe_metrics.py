"""Probe metrics: AUROC (`rama.metrics.auroc`), accuracy, recall at a fixed false-positive rate on a
control set, and calibration (reliability curve, expected calibration error).

A probe's score is p = P(label 1: true / honest). A monitor raises an alarm on label 0 (false /
deceptive), so its alarm score is 1 − p, and the alarm threshold is set on ordinary control text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rama.errors import InputError
from rama.metrics import auroc

RELIABILITY_BINS = 10


def check_probabilities(probs: torch.Tensor, what: str = "probabilities") -> None:
    if not bool(torch.isfinite(probs).all()):
        raise InputError(f"{what} contain NaN or infinite values; check the activations the probe read")
    if bool((probs < 0).any() or (probs > 1).any()):
        raise InputError(f"{what} must lie in [0, 1]")


def check_labels(labels: torch.Tensor) -> None:
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise InputError("labels must be 0 or 1")
    if labels.unique().numel() < 2:
        raise InputError(f"labels hold one class only ({int(labels[0])}); give true and false statements")


def label_auroc(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """AUROC of p `[n]` for labels `[n]` (1 = positive)."""
    check_labels(labels)
    return auroc(probs[labels == 1], probs[labels == 0])


def accuracy(probs: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> float:
    """Share of items whose prediction (p ≥ threshold → 1) equals the label."""
    check_probabilities(probs)
    return float(((probs >= threshold).long() == labels.long()).double().mean())


def alarm_threshold(control_alarms: torch.Tensor, fpr: float = 0.01) -> float:
    """The smallest control alarm score t with at most ⌊fpr · n⌋ control items strictly above it: the
    ⌊fpr · n⌋ + 1-th largest. Flag an item when its alarm score is strictly above t."""
    if not 0 < fpr < 1:
        raise InputError(f"false-positive rate {fpr} must lie strictly between 0 and 1")
    if control_alarms.numel() == 0:
        raise InputError("the control set is empty; give at least one ordinary sentence")
    check_probabilities(control_alarms, "control alarm scores")
    allowed = math.floor(fpr * control_alarms.numel())
    ranked = control_alarms.double().sort(descending=True).values
    return float(ranked[min(allowed, ranked.numel() - 1)])


def recall_above(alarms: torch.Tensor, threshold: float) -> float:
    """Share of items (those that should raise the alarm) whose alarm score is strictly above `threshold`."""
    if not 0 <= threshold <= 1:
        raise InputError(
            f"threshold {threshold} is outside [0, 1]; a probability probe's threshold must be in it"
        )
    if alarms.numel() == 0:
        raise InputError("recall needs at least one item that should raise the alarm (a label-0 statement)")
    return float((alarms > threshold).double().mean())


@dataclass(frozen=True)
class Reliability:
    """Per equal-width bin of p: mean p (`confidence`), share of label 1 (`frequency`), item count."""

    edges: list[float]
    confidence: list[float]
    frequency: list[float]
    counts: list[int]

    def ece(self) -> float:
        """Expected calibration error: Σ_b (n_b / n) |frequency_b − confidence_b| over non-empty bins."""
        total = sum(self.counts)
        return sum(n / total * abs(f - c) for n, f, c in zip(self.counts, self.frequency, self.confidence, strict=True)
                   if n)  # fmt: skip


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = RELIABILITY_BINS) -> Reliability:
    """The reliability curve of p over `bins` equal-width bins of [0, 1] (p = 1 falls in the last)."""
    check_probabilities(probs)
    index = (probs.double() * bins).long().clamp(0, bins - 1)
    confidence, frequency, counts = [], [], []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        counts.append(n)
        confidence.append(float(probs[inside].double().mean()) if n else float("nan"))
        frequency.append(float(labels[inside].double().mean()) if n else float("nan"))
    return Reliability([b / bins for b in range(bins + 1)], confidence, frequency, counts)


def expected_calibration_error(
    probs: torch.Tensor, labels: torch.Tensor, bins: int = RELIABILITY_BINS
) -> float:
    return reliability(probs, labels, bins).ece()
