"""Metrics of an intervention's effect. Each one is checked against a hand computation in the tests."""

from __future__ import annotations

import torch

from rama.errors import InputError


def _last(logits: torch.Tensor, position: int | torch.Tensor) -> torch.Tensor:
    """`[batch, d_vocab]` at `position` (an int, or one position per row `[batch]`)."""
    if isinstance(position, int):
        return logits[:, position]
    return logits[torch.arange(logits.shape[0]), position]


def logit_difference(
    logits: torch.Tensor,
    correct: torch.Tensor | int,
    incorrect: torch.Tensor | int,
    position: int | torch.Tensor = -1,
) -> torch.Tensor:
    """`[batch]`: logit(correct) − logit(incorrect) at `position`; token ids are ints or `[batch]`."""
    at = _last(logits, position)
    rows = torch.arange(at.shape[0])
    return at[rows, torch.as_tensor(correct)] - at[rows, torch.as_tensor(incorrect)]


def target_probability(
    logits: torch.Tensor, target: torch.Tensor | int, position: int | torch.Tensor = -1
) -> torch.Tensor:
    """`[batch]`: softmax probability of `target` at `position`."""
    at = _last(logits, position).float().softmax(-1)
    return at[torch.arange(at.shape[0]), torch.as_tensor(target)]


def kl_divergence(
    reference_logits: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """KL(reference ‖ intervened) per position, `[batch, pos]` (0 where `mask` is 0), in nats."""
    reference = reference_logits.float().log_softmax(-1)
    changed = logits.float().log_softmax(-1)
    kl = (reference.exp() * (reference - changed)).sum(-1)
    return kl if mask is None else kl * mask.to(kl.dtype)


def normalised_score(
    value: torch.Tensor | float, clean: torch.Tensor | float, corrupted: torch.Tensor | float
) -> torch.Tensor:
    """(value − corrupted) / (clean − corrupted): 0 = the corrupted run, 1 = the clean run."""
    value, clean, corrupted = (torch.as_tensor(v, dtype=torch.float32) for v in (value, clean, corrupted))
    span = clean - corrupted
    if bool((span.abs() < 1e-12).any()):
        raise InputError(
            "clean and corrupted runs score the same on this metric, so a normalised score is undefined; "
            "choose a metric or prompt pair that separates them"
        )
    return (value - corrupted) / span
