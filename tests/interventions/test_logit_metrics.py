"""Every metric against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from rama.interventions.logit_metrics import (
    kl_divergence,
    logit_difference,
    normalised_score,
    target_probability,
)


def test_logit_difference_and_probability_by_hand() -> None:
    logits = torch.tensor([[[0.0, 1.0, 3.0], [2.0, 0.5, -1.0]]])  # [batch 1, pos 2, vocab 3]
    assert logit_difference(logits, 0, 2).tolist() == [3.0]  # last position: 2 − (−1)
    assert logit_difference(logits, torch.tensor([2]), torch.tensor([1]), position=0).tolist() == [2.0]
    expected = math.exp(2) / (math.exp(2) + math.exp(0.5) + math.exp(-1))
    assert target_probability(logits, 0).tolist() == pytest.approx([expected])
    per_row = logit_difference(torch.cat([logits, logits]), 0, 1, position=torch.tensor([0, 1]))
    assert per_row.tolist() == [-1.0, 1.5]


def test_kl_by_hand() -> None:
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    kl = kl_divergence(p.log()[None, None], q.log()[None, None])
    assert kl.shape == (1, 1) and float(kl) == pytest.approx(expected)
    assert float(kl_divergence(p.log()[None, None], p.log()[None, None])) == pytest.approx(0.0, abs=1e-7)
    masked = kl_divergence(p.log().expand(1, 2, 2), q.log().expand(1, 2, 2), mask=torch.tensor([[1, 0]]))
    assert masked[0, 1] == 0 and float(masked[0, 0]) == pytest.approx(expected)


def test_normalised_score_by_hand() -> None:
    assert normalised_score(torch.tensor([3.0, 1.0, 2.0]), 3.0, 1.0).tolist() == [1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="score the same"):
        normalised_score(1.0, 2.0, 2.0)
