"""Toy Models of Superposition, reproduced: dense features get orthogonal dimensions and the rest
are dropped; sparse features all fit, as a pentagon."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rama.toys.superposition import (
    ToyConfig,
    ToyModel,
    dimensionality_sweep,
    geometric_importance,
    near_sticky_fraction,
    phase_diagram,
    polysemanticity,
    train_toy,
)


@pytest.fixture(scope="module")
def five_in_two() -> object:
    sparsity = torch.tensor([0.0, 0.9, 0.95])
    return train_toy(ToyConfig(n_features=5, n_hidden=2), sparsity, geometric_importance(5, 3, 0.9))


def test_dense_features_get_an_orthogonal_pair_and_the_rest_are_dropped(five_in_two: object) -> None:
    norms = five_in_two.feature_norms()[0]
    represented = (norms > 0.5).nonzero().flatten().tolist()
    assert represented == [0, 1]  # the two most important features
    W = five_in_two.W[0]
    cosine = (W[:, 0] @ W[:, 1]) / (norms[0] * norms[1])
    assert abs(float(cosine)) < 0.05 and float(norms[2:].max()) < 0.1


@pytest.mark.parametrize("instance", [1, 2], ids=["sparsity 0.9", "sparsity 0.95"])
def test_sparse_features_all_fit_as_a_pentagon(five_in_two: object, instance: int) -> None:
    norms = five_in_two.feature_norms()[instance]
    assert bool((norms > 0.8).all())
    W = five_in_two.W[instance]
    angles = sorted(math.degrees(math.atan2(float(W[1, i]), float(W[0, i]))) % 360 for i in range(5))
    gaps = [b - a for a, b in itertools.pairwise(angles)] + [360 - angles[-1] + angles[0]]
    assert all(abs(gap - 72) < 8 for gap in gaps), gaps
    dimensionality = five_in_two.dimensionality()[instance]
    assert torch.allclose(dimensionality, torch.full((5,), 2 / 5), atol=0.05)  # 2 dims shared by 5


def test_impossible_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="fewer dimensions than features"):
        ToyConfig(n_features=3, n_hidden=3)
    with pytest.raises(ValueError, match=r"sparsity must lie in \[0, 1\)"):
        train_toy(ToyConfig(steps=1), torch.tensor([1.0]), geometric_importance(5, 1))


@pytest.mark.slow
def test_phase_diagram_has_the_papers_three_regions() -> None:
    diagram = phase_diagram(
        densities=torch.tensor([0.01, 0.03, 1.0]),
        importances=torch.tensor([0.2, 1.0, 5.0]),
        replicas=3,
        config=ToyConfig(n_features=2, n_hidden=1, steps=3000, batch_size=1024),
    )
    labels = diagram.labels.tolist()  # rows: density; columns: relative importance
    assert labels[2][0] == 0  # dense and less important: not represented
    assert labels[2][2] == 1  # dense and more important: it takes the dimension
    assert labels[0][1] == 2 and labels[1][1] == 2  # sparse, equally important: superposition
    sparse = diagram.models.W[1 * 3 + 1, 0]  # density 0.03, importance 1
    assert float(sparse[0] * sparse[1]) < 0  # the two features are antipodal


@pytest.mark.slow
def test_feature_dimensionalities_stick_to_the_papers_fractions() -> None:
    sweep = dimensionality_sweep(torch.tensor([0.4, 0.2, 0.03]), n_features=100, n_hidden=20, steps=3000)
    dims, norms = sweep.dimensionality(), sweep.feature_norms()
    # the dimensions are fully used at every sparsity: Σ_i D_i = m
    assert torch.allclose(dims.sum(-1), torch.full((3,), 20.0), atol=0.3)
    pairs = dims[0][norms[0] > 0.5]  # density 0.4: antipodal pairs, D = 1/2
    assert len(pairs) > 30 and float(near_sticky_fraction(pairs, 0.03).float().mean()) > 0.9
    assert float(((pairs - 0.5).abs() < 0.03).float().mean()) > 0.9
    denser_packing = dims[1][norms[1] > 0.5]  # density 0.2: triangles and pentagons, D in 1/3 … 2/5
    assert len(denser_packing) > len(pairs)
    assert float(((denser_packing > 0.3) & (denser_packing < 0.42)).float().mean()) > 0.9
    very_sparse = dims[2][norms[2] > 0.5]
    assert len(very_sparse) >= 95 and float((very_sparse - 0.2).abs().max()) < 0.05  # all 100 share 20 dims


def test_neuron_basis_neurons_grow_polysemantic_with_sparsity() -> None:
    sparsity = torch.tensor([0.0, 0.9, 0.99])
    config = ToyConfig(n_features=10, n_hidden=5, neuron_basis=True, steps=3000, batch_size=1024)
    model = train_toy(config, sparsity, geometric_importance(10, 3, 0.8))
    numbers = polysemanticity(model)
    per_neuron = numbers["features_per_neuron"].tolist()
    assert per_neuron[0] < per_neuron[1] < per_neuron[2]  # more features per neuron as sparsity grows
    assert per_neuron[0] < 2.5 and per_neuron[2] > 5.0
    assert float(numbers["polysemantic_fraction"][2]) == 1.0
    with pytest.raises(ValueError, match="neuron-basis"):
        polysemanticity(train_toy(ToyConfig(steps=1), torch.tensor([0.5]), geometric_importance(5, 1)))


def test_dimensionality_on_a_hand_case() -> None:
    # features 0 and 1 antipodal on axis x, feature 2 alone on y, feature 3 dropped
    W = torch.tensor([[[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]])
    model = ToyModel(W, torch.zeros(1, 4), torch.tensor([0.9]), torch.ones(1, 4))
    assert model.dimensionality()[0].tolist() == pytest.approx([0.5, 0.5, 1.0, 0.0])
    assert near_sticky_fraction(torch.tensor([0.51, 0.45, 0.34])).tolist() == [True, False, True]
