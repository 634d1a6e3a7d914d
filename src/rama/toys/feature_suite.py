"""Synthetic activations built from a known dictionary (Sharkey et al. 2022 style).

Each sample is a sparse non-negative combination of ground-truth unit directions, so an SAE's
decoder can be scored against the answer with `rama.metrics.mmcs`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from rama.errors import ConfigError


@dataclass(frozen=True)
class FeatureSuiteConfig:
    d: int = 256  # activation dimension
    n_features: int = 512
    mean_active: float = 5.0  # expected number of active features per sample
    frequency_decay: float = 0.0  # power-law exponent of feature frequencies (0: all equally frequent)
    correlation: float = 0.0  # 0..1: how strongly features co-occur in groups of 4
    magnitude_noise: float = 0.0  # std of the multiplicative noise on active magnitudes
    seed: int = 0

    def __post_init__(self) -> None:
        if self.d <= 0 or self.n_features <= 0:
            raise ConfigError(
                f"d and n_features must be positive; got d={self.d}, n_features={self.n_features}"
            )
        if not 0 < self.mean_active <= self.n_features:
            raise ConfigError(
                f"mean_active must be in (0, n_features={self.n_features}]; got {self.mean_active}: "
                f"more active features than features is impossible"
            )
        if not 0 <= self.correlation <= 1:
            raise ConfigError(f"correlation must be in [0, 1]; got {self.correlation}")


class FeatureSuite:
    """`dictionary [n_features, d]` (unit rows) and an endless, seeded stream of samples."""

    def __init__(self, config: FeatureSuiteConfig | None = None) -> None:
        self.config = config = config or FeatureSuiteConfig()
        generator = torch.Generator().manual_seed(config.seed)
        directions = torch.randn(config.n_features, config.d, generator=generator)
        self.dictionary = directions / directions.norm(dim=1, keepdim=True)
        ranks = torch.arange(1, config.n_features + 1, dtype=torch.float64)
        weights = ranks.pow(-config.frequency_decay)
        probabilities = weights / weights.sum() * config.mean_active
        self.probabilities = probabilities.clamp(max=1.0).float()[
            torch.randperm(config.n_features, generator=generator)
        ]

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(activations `[n, d]`, true feature coefficients `[n, n_features]`)."""
        c = self.config
        p = self.probabilities.expand(n, -1)
        if c.correlation > 0:  # groups of 4 consecutive features share a latent coin
            groups = torch.rand(n, (c.n_features + 3) // 4, generator=generator).repeat_interleave(4, dim=1)
            own = torch.rand(n, c.n_features, generator=generator)
            u = c.correlation * groups[:, : c.n_features] + (1 - c.correlation) * own
        else:
            u = torch.rand(n, c.n_features, generator=generator)
        active = u < p
        magnitude = torch.rand(n, c.n_features, generator=generator)
        if c.magnitude_noise > 0:
            magnitude = magnitude * (
                1 + c.magnitude_noise * torch.randn(n, c.n_features, generator=generator)
            ).clamp_min(0)
        coefficients = active * magnitude
        return coefficients @ self.dictionary, coefficients

    def batches(self, batch_size: int, seed: int | None = None) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.config.seed + 1 if seed is None else seed)
        while True:
            yield self.sample(batch_size, generator)[0]
