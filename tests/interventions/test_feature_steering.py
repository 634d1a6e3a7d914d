"""Feature clamps through an SAE keep its error term: only the chosen features' decoder rows move x."""

from __future__ import annotations

import pytest
import torch

import rama
from rama.interventions import ablate_features, feature_direction, set_features
from rama.sae import SAE
from rama.sae.base import SAEConfig
from rama.sae.topk import TopKConfig

SITE = "blocks.1.hook_resid_pre"


@pytest.fixture(scope="module")
def sae() -> SAE:
    torch.manual_seed(0)
    return SAE.create(
        SAEConfig(d_in=64, d_sae=256, architecture="topk", arch=TopKConfig(k=16), hook_name=SITE)
    ).eval()


def test_clamping_a_feature_moves_x_along_its_decoder_row_only(ioi_toy: rama.HookedModel, sae: SAE) -> None:
    tokens = torch.tensor([[1, 20, 25, 21, 22, 23]])
    _, cache = ioi_toy.run_with_cache(tokens, names=SITE)
    x = cache[SITE]
    codes = sae.encode(x)
    feature = int(codes[0, 3].argmax())
    _, steered = ioi_toy.run_with_cache(
        tokens, names=SITE, fwd_hooks=[set_features(ioi_toy, sae, [feature], 10.0)]
    )
    expected = x + (10.0 - codes[..., feature])[..., None] * feature_direction(sae, feature)
    torch.testing.assert_close(steered[SITE], expected, atol=1e-5, rtol=1e-5)
    _, ablated = ioi_toy.run_with_cache(
        tokens, names=SITE, fwd_hooks=[ablate_features(ioi_toy, sae, [feature], positions=[3])]
    )
    torch.testing.assert_close(
        ablated[SITE][0, 3], x[0, 3] - codes[0, 3, feature] * sae.W_dec[feature], atol=1e-5, rtol=1e-5
    )
    assert torch.equal(ablated[SITE][0, [0, 1, 2, 4, 5]], x[0, [0, 1, 2, 4, 5]])


def test_bad_feature_requests_are_clear(ioi_toy: rama.HookedModel, sae: SAE) -> None:
    with pytest.raises(IndexError, match="outside this SAE's 256 latents"):
        set_features(ioi_toy, sae, [300], 1.0)
    with pytest.raises(ValueError, match=r"trained on 'blocks\.1\.hook_resid_pre'"):
        set_features(ioi_toy, sae, [0], 1.0, site="blocks.2.hook_resid_pre")
    wide = SAE.create(SAEConfig(d_in=32, d_sae=64, architecture="topk", arch=TopKConfig(k=4), hook_name=SITE))
    with pytest.raises(ValueError, match="d_in=32"):
        set_features(ioi_toy, wide, [0], 1.0)
    with pytest.raises(ValueError, match="finite"):
        set_features(ioi_toy, sae, [0], float("nan"))
