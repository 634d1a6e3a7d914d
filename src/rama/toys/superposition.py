"""Toy Models of Superposition (Elhage et al. 2022): `x' = ReLU(WᵀW x + b)`, n sparse features in m dims.

Many instances (one per sparsity, importance, …) train side by side as one batched model, so a whole
phase diagram trains in seconds on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rama.errors import ConfigError


@dataclass(frozen=True)
class ToyConfig:
    n_features: int = 5
    n_hidden: int = 2
    steps: int = 3000
    batch_size: int = 512
    lr: float = 1e-2
    neuron_basis: bool = False  # ReLU(W x) hidden layer: neurons become a privileged basis
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_hidden >= self.n_features:
            raise ConfigError(
                f"superposition needs fewer dimensions than features: n_hidden={self.n_hidden} "
                f">= n_features={self.n_features}"
            )


@dataclass
class ToyModel:
    """Trained weights of every instance: `W [instance, n_hidden, n_features]`, `b [instance, n_features]`."""

    W: torch.Tensor
    b: torch.Tensor
    sparsity: torch.Tensor  # [instance]
    importance: torch.Tensor  # [instance, n_features]
    neuron_basis: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x [instance, batch, n_features]` -> reconstruction, same shape."""
        hidden = torch.einsum("imn,ibn->ibm", self.W, x)
        if self.neuron_basis:
            hidden = hidden.relu()
        return (torch.einsum("imn,ibm->ibn", self.W, hidden) + self.b[:, None]).relu()

    def feature_norms(self) -> torch.Tensor:
        """‖W_i‖ per feature: `[instance, n_features]` (≈1 represented, ≈0 dropped)."""
        return self.W.norm(dim=1)

    def dimensionality(self) -> torch.Tensor:
        """`D_i = ‖W_i‖² / Σ_j (Ŵ_i·W_j)²`: the fraction of a dimension feature i gets."""
        columns = self.W.transpose(1, 2)  # [instance, n_features, n_hidden]
        unit = columns / columns.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        overlaps = torch.einsum("ifm,igm->ifg", unit, columns).pow(2).sum(-1)
        return columns.pow(2).sum(-1) / overlaps.clamp_min(1e-12)

    def features_per_neuron(self, threshold: float = 0.3) -> torch.Tensor:
        """For the neuron-basis variant: how many features each neuron responds to, `[instance, n_hidden]`."""
        return (self.W.abs() > threshold).sum(-1)


def sample_features(sparsity: torch.Tensor, n: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """`[instance, batch, n]`: each feature 0 with probability `sparsity`, else uniform on [0, 1]."""
    instances = sparsity.shape[0]
    values = torch.rand(instances, batch, n, generator=generator)
    present = torch.rand(instances, batch, n, generator=generator) >= sparsity[:, None, None]
    return values * present


def train_toy(config: ToyConfig, sparsity: torch.Tensor, importance: torch.Tensor) -> ToyModel:
    """Train one instance per row of `sparsity [instance]` / `importance [instance, n_features]`."""
    if not bool(((sparsity >= 0) & (sparsity < 1)).all()):
        raise ConfigError(f"feature sparsity must lie in [0, 1); got {sparsity.tolist()}")
    if importance.shape != (sparsity.shape[0], config.n_features):
        raise ConfigError(
            f"importance must be [instance, n_features] = {(sparsity.shape[0], config.n_features)}; "
            f"got {tuple(importance.shape)}"
        )
    generator = torch.Generator().manual_seed(config.seed)
    instances = sparsity.shape[0]
    W = torch.nn.init.xavier_normal_(
        torch.empty(instances, config.n_hidden, config.n_features), generator=generator
    )
    W.requires_grad_(True)
    b = torch.zeros(instances, config.n_features, requires_grad=True)
    optimizer = torch.optim.AdamW([W, b], lr=config.lr, weight_decay=0.0)
    model = ToyModel(W, b, sparsity, importance, config.neuron_basis)
    for _ in range(config.steps):
        x = sample_features(sparsity, config.n_features, config.batch_size, generator)
        loss = (importance[:, None] * (model.forward(x) - x).pow(2)).mean(dim=(1, 2)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return ToyModel(W.detach(), b.detach(), sparsity, importance, config.neuron_basis)


def geometric_importance(n_features: int, instances: int, decay: float = 0.9) -> torch.Tensor:
    return (decay ** torch.arange(n_features, dtype=torch.float32)).expand(instances, -1).clone()


def phase_label(model: ToyModel) -> torch.Tensor:
    """For 2 features in 1 dimension: 0 = feature 2 not represented, 1 = feature 2 gets the dimension
    alone, 2 = both in superposition (opposite signs). `[instance]`."""
    norms = model.feature_norms()
    first, second = norms[:, 0] > 0.5, norms[:, 1] > 0.5
    labels = torch.zeros(norms.shape[0], dtype=torch.long)
    labels[second & ~first] = 1
    labels[second & first] = 2
    return labels


def instance_losses(model: ToyModel, samples: int = 20_000, seed: int = 12_345) -> torch.Tensor:
    """Importance-weighted reconstruction loss of every instance on fresh samples: `[instance]`."""
    generator = torch.Generator().manual_seed(seed)
    x = sample_features(model.sparsity, model.W.shape[2], samples, generator)
    with torch.no_grad():
        return (model.importance[:, None] * (model.forward(x) - x).pow(2)).mean(dim=(1, 2))


@dataclass
class PhaseDiagram:
    """2 features in 1 dimension: `labels [density, importance]` as in `phase_label`."""

    densities: torch.Tensor  # 1 - sparsity, [n_density]
    importances: torch.Tensor  # relative importance of the second feature, [n_importance]
    labels: torch.Tensor
    models: ToyModel  # the best replica of each cell, cells in row-major order


def phase_diagram(
    densities: torch.Tensor | None = None,
    importances: torch.Tensor | None = None,
    replicas: int = 4,
    config: ToyConfig | None = None,
) -> PhaseDiagram:
    """Train every (density, importance) cell `replicas` times from different starts and keep the
    lowest-loss replica, since single runs in 1 dimension often stall in a local minimum."""
    densities = torch.logspace(-2, 0, 10) if densities is None else densities
    importances = torch.logspace(-1, 1, 10) if importances is None else importances
    config = config or ToyConfig(n_features=2, n_hidden=1, steps=4000, batch_size=1024)
    if (config.n_features, config.n_hidden) != (2, 1):
        raise ConfigError("the phase diagram is for 2 features in 1 dimension (n_features=2, n_hidden=1)")
    cells = len(densities) * len(importances)
    sparsity = (1 - densities).repeat_interleave(len(importances)).repeat(replicas)
    second = importances.repeat(len(densities)).repeat(replicas)
    importance = torch.stack([torch.ones_like(second), second], dim=1)
    trained = train_toy(config, sparsity, importance)
    best = instance_losses(trained).view(replicas, cells).argmin(0) * cells + torch.arange(cells)
    models = ToyModel(
        trained.W[best],
        trained.b[best],
        trained.sparsity[best],
        trained.importance[best],
        config.neuron_basis,
    )
    labels = phase_label(models).view(len(densities), len(importances))
    return PhaseDiagram(densities, importances, labels, models)


STICKY_FRACTIONS = (1.0, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 3 / 8, 1 / 3, 1 / 4)


def dimensionality_sweep(
    densities: torch.Tensor | None = None, n_features: int = 100, n_hidden: int = 20, steps: int = 6000
) -> ToyModel:
    """Uniform-importance models over a range of feature densities, one instance each, for the
    feature-dimensionality plot (dimensionalities stick at 1, 1/2, 2/5, 1/3, … as sparsity grows)."""
    densities = torch.logspace(0, -2, 16) if densities is None else densities
    config = ToyConfig(n_features=n_features, n_hidden=n_hidden, steps=steps, batch_size=1024, lr=1e-2)
    return train_toy(config, 1 - densities, torch.ones(len(densities), n_features))


def near_sticky_fraction(dimensionality: torch.Tensor, tolerance: float = 0.04) -> torch.Tensor:
    """Which entries lie within `tolerance` of one of `STICKY_FRACTIONS` (boolean, same shape)."""
    fractions = torch.tensor(STICKY_FRACTIONS)
    return (dimensionality[..., None] - fractions).abs().min(-1).values < tolerance


def polysemanticity(model: ToyModel, threshold: float = 0.3) -> dict[str, torch.Tensor]:
    """For the neuron-basis variant, per instance: the mean number of features a responsive neuron
    reads (|W| > threshold) and the share of responsive neurons that read more than one."""
    if not model.neuron_basis:
        raise ConfigError(
            "polysemanticity is a property of the neuron-basis model (ToyConfig(neuron_basis=True))"
        )
    counts = model.features_per_neuron(threshold).float()  # [instance, n_hidden]
    active = (counts > 0).float()
    responsive = active.sum(-1).clamp_min(1)
    return {
        "features_per_neuron": counts.sum(-1) / responsive,
        "polysemantic_fraction": ((counts > 1).float() * active).sum(-1) / responsive,
    }
