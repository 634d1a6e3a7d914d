"""Toy Models of Superposition (Elhage et al. 2022): `x' = ReLU(WᵀW x + b)`, n sparse features in m dims.

Many instances (one per sparsity, importance, …) train side by side as one batched model, so a whole
phase diagram trains in seconds on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
            raise ValueError(
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
        raise ValueError(f"feature sparsity must lie in [0, 1); got {sparsity.tolist()}")
    if importance.shape != (sparsity.shape[0], config.n_features):
        raise ValueError(
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
