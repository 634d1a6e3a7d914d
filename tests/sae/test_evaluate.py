"""Metrics against hand computations, and the spliced-loss test on the real model."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from rama.sae import SAE, HarvestConfig, SAEConfig, evaluate
from rama.sae.evaluate import reconstruction_metrics


def identity_sae(d: int, site: str) -> SAE:
    """ReLU SAE with latents ±e_i: relu(x) − relu(−x) = x, so it reconstructs exactly."""
    sae = SAE.create(SAEConfig(d_in=d, d_sae=2 * d, architecture="standard", hook_name=site))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def test_reconstruction_metrics_on_a_hand_case() -> None:
    sae = SAE.create(SAEConfig(d_in=2, d_sae=3, architecture="standard"))
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.W_dec.copy_(torch.tensor([[0.5, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    x = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    m = reconstruction_metrics(sae, x)
    # codes: [[2,0,0],[0,4,0]] -> reconstructions [[1,0],[0,4]]; errors 1 and 0
    assert m["mse"] == pytest.approx(0.5)
    # variance: mean (1, 2); squared deviations 1+4 and 1+4 -> 10; fvu = 1/10
    assert m["fvu"] == pytest.approx(0.1) and m["explained_variance"] == pytest.approx(0.9)
    assert m["l0"] == pytest.approx(1.0) and m["dead_fraction"] == pytest.approx(1 / 3)
    assert m["dense_fraction"] == pytest.approx(2 / 3)  # latents 0 and 1 fire on half the tokens
    assert m["shrinkage"] == pytest.approx((0.5 + 1.0) / 2)


@pytest.mark.slow
def test_a_perfect_sae_recovers_all_the_loss_and_zero_recovers_none(smollm: Any) -> None:
    site = "blocks.5.hook_resid_post"
    config = HarvestConfig(tokens=512, batch_size=4, context_size=64, split="test", progress=False)
    perfect = evaluate(identity_sae(576, site), smollm, config=config)
    assert perfect["fvu"] < 1e-10 and perfect["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert perfect["kl_spliced"] < 1e-5
    assert perfect["ce_loss_ablated"] > perfect["ce_loss_clean"] + 1
    useless = identity_sae(576, site)
    with torch.no_grad():
        useless.W_dec.zero_()
    zero = evaluate(useless, smollm, config=config)
    assert zero["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-4)
    assert zero["fvu"] > 1  # predicting 0 misses the mean as well as the variance


def test_ce_loss_recovered_is_nan_with_a_warning_when_ablation_does_not_raise_the_loss() -> None:
    from rama.sae.evaluate import ce_loss_recovered

    assert ce_loss_recovered(clean=3.0, spliced=3.25, ablated=5.0) == pytest.approx(0.875)  # 1.75 / 2
    # the reported case: ablating barely moved the loss, so the old ratio was -2.8e10
    with pytest.warns(UserWarning, match=r"undefined \(reported as NaN\).*\+0\.00e\+00 nats"):
        assert math.isnan(ce_loss_recovered(clean=3.0, spliced=5.8, ablated=3.0))
    with pytest.warns(UserWarning, match=r"-5\.00e-01 nats"):  # ablating helped: no loss to recover
        assert math.isnan(ce_loss_recovered(clean=3.0, spliced=3.1, ablated=2.5))


def test_fvu_is_defined_once_with_a_zero_variance_guard() -> None:
    from rama.metrics import fvu, fvu_tensor
    from rama.sae.base import mse_fvu

    target = torch.tensor([[1.0, 2.0], [3.0, 6.0]])  # deviations from the mean (2, 4): 1+4 and 1+4
    reconstruction = torch.tensor([[1.0, 3.0], [3.0, 6.0]])  # error 1
    assert fvu(reconstruction, target) == pytest.approx(0.1)
    assert float(mse_fvu(reconstruction, target)[1]) == float(fvu_tensor(reconstruction, target))
    constant = torch.ones(3, 2)
    assert fvu(constant + 1, constant) == pytest.approx(6 / 1e-12)  # finite, not inf or nan
    metrics = reconstruction_metrics(
        SAE.create(SAEConfig(d_in=2, d_sae=3, architecture="standard")), constant
    )
    assert math.isfinite(metrics["fvu"])
