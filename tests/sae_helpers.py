"""Helpers shared by the SAE tests."""

from __future__ import annotations

import torch

from rama.sae import SAE, SAEConfig


def perturbed(cfg: SAEConfig) -> SAE:
    """An SAE of `cfg` with every parameter nudged off its initialisation (so biases are non-zero)."""
    sae = SAE.create(cfg)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return sae.eval()
