"""Metrics checked against hand computations."""

from __future__ import annotations

import pytest
import torch

from rama.errors import InputError
from rama.metrics import auroc


def test_auroc_counts_ties_as_half_by_hand() -> None:
    positive = torch.tensor([0.9, 0.8, 0.5, 0.3])
    negative = torch.tensor([0.8, 0.5, 0.2, 0.1])
    # pairs won by each positive: 0.9 → 4; 0.8 → 3 + ½ (tie with 0.8); 0.5 → 2 + ½ (tie with 0.5); 0.3 → 2
    assert auroc(positive, negative) == pytest.approx((4 + 3.5 + 2.5 + 2) / 16)  # 0.75
    assert auroc(negative, positive) == pytest.approx(1 - 0.75)
    assert auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert auroc(torch.ones(4), torch.ones(4)) == 0.5
    with pytest.raises(InputError, match="needs both classes; got 0 positive, 2 negative"):
        auroc(torch.tensor([]), torch.zeros(2))
