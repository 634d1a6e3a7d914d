"""Toy Models of Superposition, reproduced: dense features get orthogonal dimensions and the rest
are dropped; sparse features all fit, as a pentagon."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rama.toys.superposition import ToyConfig, geometric_importance, train_toy


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
