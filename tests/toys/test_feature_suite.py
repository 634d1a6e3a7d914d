"""The synthetic feature suite and the metrics that score against it, on hand cases."""

from __future__ import annotations

import pytest
import torch

from rama.metrics import fraction_recovered, fvu, max_cosine, mmcs
from rama.toys import FeatureSuite, FeatureSuiteConfig


def test_mmcs_and_recovery_on_a_hand_case() -> None:
    true = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    learned = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # matches e1 exactly, e2 at cos 1/√2
    assert max_cosine(learned, true).tolist() == pytest.approx([1.0, 2**-0.5])
    assert mmcs(learned, true) == pytest.approx((1 + 2**-0.5) / 2)
    assert fraction_recovered(learned, true, 0.9) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="differ in dimension"):
        mmcs(torch.ones(2, 3), true)


def test_fvu_on_a_hand_case() -> None:
    target = torch.tensor([[1.0], [3.0]])  # mean 2, variance sum 2
    assert fvu(torch.tensor([[1.0], [2.0]]), target) == pytest.approx(0.5)


def test_suite_is_sparse_seeded_and_built_from_its_dictionary() -> None:
    suite = FeatureSuite(FeatureSuiteConfig(d=64, n_features=128, mean_active=5, seed=1))
    assert torch.allclose(suite.dictionary.norm(dim=1), torch.ones(128))
    x, coefficients = suite.sample(4000, torch.Generator().manual_seed(0))
    assert (coefficients > 0).sum(1).float().mean() == pytest.approx(5, abs=0.3)
    torch.testing.assert_close(x, coefficients @ suite.dictionary)
    again, _ = FeatureSuite(FeatureSuiteConfig(d=64, n_features=128, mean_active=5, seed=1)).sample(
        4000, torch.Generator().manual_seed(0)
    )
    assert torch.equal(x, again)


def test_power_law_frequencies_and_correlation_options() -> None:
    suite = FeatureSuite(FeatureSuiteConfig(d=32, n_features=64, mean_active=4, frequency_decay=1.0))
    assert suite.probabilities.max() > 5 * suite.probabilities.min()
    correlated = FeatureSuite(FeatureSuiteConfig(d=32, n_features=64, mean_active=4, correlation=0.9))
    _, c = correlated.sample(20000, torch.Generator().manual_seed(0))
    active = (c > 0).float()
    same_group = torch.corrcoef(active[:, :2].T)[0, 1]
    assert same_group > 0.3


def test_impossible_suites_are_refused() -> None:
    with pytest.raises(ValueError, match="more active features than features"):
        FeatureSuiteConfig(n_features=4, mean_active=5)
    with pytest.raises(ValueError, match="correlation must be in"):
        FeatureSuiteConfig(correlation=1.5)
