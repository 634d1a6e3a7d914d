"""The weights fingerprint: equal for equal weights, different after any change a training step makes."""

from __future__ import annotations

import copy

import pytest
import torch

from rama.models.fingerprint import weights_fingerprint


def test_fingerprint_is_stable_and_sees_changes() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 200), torch.nn.LayerNorm(200))
    same = copy.deepcopy(model)
    assert weights_fingerprint(model) == weights_fingerprint(same)
    assert len(weights_fingerprint(model)) == 16
    with torch.no_grad():
        same[0].weight.add_(1e-3 * torch.randn_like(same[0].weight))  # what a training step does
    assert weights_fingerprint(model) != weights_fingerprint(same)
    renamed = torch.nn.Sequential(torch.nn.Identity(), *copy.deepcopy(model))
    assert weights_fingerprint(renamed) != weights_fingerprint(model)  # names count


def test_fingerprint_refuses_meta_tensors() -> None:
    with torch.device("meta"):
        model = torch.nn.Linear(4, 4)
    with pytest.raises(ValueError, match="meta device"):
        weights_fingerprint(model)
