"""Every architecture recovers a known dictionary (512 unit directions in 256 dims, ~5 active):
the cheap guard against training regressions. Numbers per architecture go into the README."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from rama.metrics import fraction_recovered, fvu, mmcs
from rama.sae import SAE, SAEConfig, TopKConfig, fit
from rama.toys import FeatureSuite

RECIPES: dict[str, dict[str, Any]] = {
    "topk": {"k": 5},
    "batchtopk": {"k": 5},
    "matryoshka": {"k": 5},
    "standard": {"l1_coefficient": 3.0},
    "jumprelu": {"l0_coefficient": 2.0},
    "gated": {"l1_coefficient": 3.0},
}


@pytest.fixture(scope="module")
def suite_data() -> tuple[FeatureSuite, torch.Tensor, torch.Tensor]:
    suite = FeatureSuite()
    generator = torch.Generator().manual_seed(5)
    train, _ = suite.sample(60_000, generator)
    held_out, _ = suite.sample(4_000, generator)
    return suite, train, held_out


@pytest.mark.parametrize("architecture", list(RECIPES))
def test_recovers_the_ground_truth_dictionary(architecture: str, suite_data: Any) -> None:
    suite, train, held_out = suite_data
    sae = fit(
        train,
        architecture=architecture,
        d_sae=512,
        batch_size=1024,
        total_tokens=600_000,
        lr=1e-3,
        progress=False,
        **RECIPES[architecture],
    )
    learned = sae.W_dec.detach()
    with torch.no_grad():
        codes = sae.encode(held_out)
        reconstruction = sae.decode(codes, held_out)
    l0 = float((codes > 0).sum(-1).float().mean())
    print(
        f"{architecture}: mmcs {mmcs(learned, suite.dictionary):.3f}, recovered@0.9 "
        f"{fraction_recovered(learned, suite.dictionary):.3f}, fvu {fvu(reconstruction, held_out):.3f}, l0 {l0:.1f}"
    )
    assert mmcs(learned, suite.dictionary) >= 0.95
    assert fraction_recovered(learned, suite.dictionary, 0.9) >= 0.9
    assert fvu(reconstruction, held_out) < 0.15
    assert 3 <= l0 <= 30


def test_topk_encode_keeps_exactly_k_and_decode_shapes() -> None:
    sae = SAE.create(SAEConfig(d_in=16, d_sae=64, architecture="topk", arch=TopKConfig(k=4)))
    x = torch.randn(10, 16)
    codes = sae.encode(x)
    assert codes.shape == (10, 64) and ((codes > 0).sum(-1) <= 4).all()
    assert sae(x).shape == (10, 16) and sae.W_enc.shape == (16, 64) and sae.W_dec.shape == (64, 16)


def test_sparse_decode_equals_dense_decode() -> None:
    from rama.sae.topk import dense_codes, sparse_decode

    W_dec = torch.randn(64, 16)
    values, indices = torch.rand(5, 4), torch.randint(0, 64, (5, 4))
    dense = dense_codes(indices, values, 64) @ W_dec
    torch.testing.assert_close(sparse_decode(indices, values, W_dec), dense, rtol=1e-5, atol=1e-5)


def test_batchtopk_keeps_k_per_token_on_average_and_learns_a_threshold() -> None:
    suite = FeatureSuite()
    train, _ = suite.sample(20_000, torch.Generator().manual_seed(1))
    sae = fit(
        train, architecture="batchtopk", d_sae=512, k=5, batch_size=1024, total_tokens=100_000, progress=False
    )
    assert float(sae.threshold) > 0
    with torch.no_grad():
        l0 = float((sae.encode(train[:2000]) > 0).sum(-1).float().mean())
    # the threshold is calibrated on the training sample after the last step: k per token there
    assert l0 == pytest.approx(5, abs=0.3)


def test_transcoder_with_skip_learns_a_map_between_sites() -> None:
    generator = torch.Generator().manual_seed(0)
    suite = FeatureSuite()
    x, coefficients = suite.sample(40_000, generator)
    readout = torch.randn(512, 48, generator=generator) / 512**0.5
    linear = torch.randn(256, 48, generator=generator) * 0.05
    y = coefficients.relu() @ readout + x @ linear
    sae = fit(
        x,
        y,
        architecture="topk",
        d_sae=512,
        k=8,
        batch_size=1024,
        total_tokens=400_000,
        lr=1e-3,
        skip_connection=True,
        progress=False,
    )
    assert sae.cfg.is_transcoder and sae.W_dec.shape == (512, 48) and sae.W_skip is not None
    with torch.no_grad():
        assert fvu(sae(x[:4000]), y[:4000]) < 0.2


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match=r"0 < k <= d_sae"):
        SAE.create(SAEConfig(d_in=8, d_sae=16, architecture="topk", arch=TopKConfig(k=32)))
    with pytest.raises(ValueError, match="unknown SAE architecture 'bogus'"):
        SAE.create(SAEConfig(d_in=8, d_sae=16, architecture="bogus"))
    with pytest.raises(ValueError, match="needs l1_coefficient > 0"):
        fit(
            torch.randn(2048, 8),
            architecture="standard",
            d_sae=16,
            batch_size=1024,
            total_tokens=2048,
            progress=False,
        )
    with pytest.raises(ValueError, match="fewer than one batch"):
        fit(torch.randn(10, 8), architecture="topk", d_sae=16, k=2, batch_size=1024, progress=False)


def test_sparse_encoder_backward_equals_dense_autograd() -> None:
    from rama.sae.topk import GatherPre

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(12, 8, generator=generator, requires_grad=True)
    W_enc = torch.randn(8, 30, generator=generator, requires_grad=True)
    b_enc = torch.randn(30, generator=generator, requires_grad=True)
    weights = torch.randn(12, 4, generator=generator)
    with torch.no_grad():
        pre = x @ W_enc + b_enc
        indices = pre.topk(4, dim=-1).indices
    (GatherPre.apply(pre, x, W_enc, b_enc, indices).relu() * weights).sum().backward()
    ours = [t.grad.clone() for t in (x, W_enc, b_enc)]
    for t in (x, W_enc, b_enc):
        t.grad = None
    ((x @ W_enc + b_enc).gather(1, indices).relu() * weights).sum().backward()
    for mine, reference in zip(ours, (x.grad, W_enc.grad, b_enc.grad), strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-5)
