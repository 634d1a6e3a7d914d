"""Training under bf16 autocast (`TrainConfig.autocast="bfloat16"`, `rama sae train --autocast bfloat16`):
the forward's dense matmuls run in bf16, while the weights, gradients, Adam's state and the loss stay
fp32; TopK takes its bf16-selection path. On this CPU bf16 is emulated (slow), so the sizes are small."""

from __future__ import annotations

import warnings

import pytest
import torch

from rama.errors import ConfigError
from rama.sae import SAE, TrainConfig, fit
from rama.sae.topk import this_cpu_native_bf16
from rama.sae.train_config import resume_differences
from rama.toys import FeatureSuite

DENSE = {
    "standard": {"l1_coefficient": 1.0},
    "gated": {"l1_coefficient": 1.0},
    "jumprelu": {"l0_coefficient": 1.0},
    "batchtopk": {"k": 8},
    "matryoshka": {"k": 8, "matryoshka_widths": [64, 256]},
}


@pytest.fixture(scope="module")
def suite() -> torch.Tensor:
    """Sparse sums of 512 directions in 256 dims."""
    inputs, _ = FeatureSuite().sample(4096, torch.Generator().manual_seed(3))
    return inputs


def quiet_fit(x: torch.Tensor, **settings: object) -> SAE:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # this CPU may have no native bf16
        return fit(x, d_sae=256, batch_size=256, progress=False, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("architecture", sorted(DENSE))
def test_the_dense_forward_runs_in_bf16_and_every_state_stays_fp32(
    architecture: str, suite: torch.Tensor
) -> None:
    """Two steps: the weights differ from the fp32 run's (so bf16 really ran) by bf16 rounding only."""
    settings = {"architecture": architecture, "total_tokens": 512, **DENSE[architecture]}
    fp32 = quiet_fit(suite, **settings)
    bf16 = quiet_fit(suite, autocast="bfloat16", **settings)
    for name, tensor in bf16.state_dict().items():
        assert tensor.dtype == fp32.state_dict()[name].dtype, name
    assert bf16.W_enc.dtype == torch.float32 and bf16.W_dec.dtype == torch.float32
    assert not torch.equal(bf16.W_dec, fp32.W_dec)
    torch.testing.assert_close(bf16.W_dec, fp32.W_dec, rtol=0.05, atol=2e-3)


def test_topk_under_autocast_is_its_bf16_selection_bit_for_bit(suite: torch.Tensor) -> None:
    """TopK's dense matmul only picks latents: under autocast it is the bf16 selection (fp32 values)."""
    settings = {"architecture": "topk", "k": 8, "total_tokens": 1024}
    autocast = quiet_fit(suite, autocast="bfloat16", **settings)
    selection = quiet_fit(suite, select_dtype="bfloat16", **settings)
    assert torch.equal(autocast.W_enc, selection.W_enc) and torch.equal(autocast.W_dec, selection.W_dec)


def test_bf16_autocast_trains_to_the_fp32_fvu(suite: torch.Tensor) -> None:
    """(TopK's is its bf16 selection's, whose FVU test_topk_select checks.)"""
    settings = {"architecture": "standard", "total_tokens": 8192, **DENSE["standard"]}
    held_out = suite[-1024:]

    def fvu(sae: SAE) -> float:
        with torch.no_grad():
            error = (sae(held_out) - held_out).pow(2).sum()
        return float(error / (held_out - held_out.mean(0)).pow(2).sum())

    fp32, bf16 = (
        fvu(quiet_fit(suite[:-1024], **settings)),
        fvu(quiet_fit(suite[:-1024], autocast="bfloat16", **settings)),
    )
    assert bf16 == pytest.approx(fp32, rel=0.01)  # the bar: FVU unchanged to 1 %


def test_bad_autocast_settings_are_refused_and_the_default_is_not_recorded() -> None:
    with pytest.raises(ConfigError, match="autocast must be one of float32, bfloat16; got 'float16'"):
        TrainConfig.create(autocast="float16")
    with pytest.raises(ConfigError, match="autocast='bfloat16' is not sharded yet"):
        TrainConfig.create(architecture="topk", autocast="bfloat16", parallel="latents")
    default = TrainConfig.create(architecture="topk")
    assert "autocast" not in default.to_dict()  # older checkpoints, which lack it, still resume
    bf16 = TrainConfig.create(architecture="topk", autocast="bfloat16")
    assert bf16.to_dict()["autocast"] == "bfloat16"
    assert resume_differences(default.to_dict(), bf16.to_dict()) == [
        "autocast=None, this run asks autocast='bfloat16'"
    ]


def test_autocast_on_a_cpu_without_native_bf16_is_named_before_training(suite: torch.Tensor) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for dtype in ("float32", "bfloat16"):
            fit(suite[:256], architecture="standard", d_sae=64, l1_coefficient=1.0, autocast=dtype,
                batch_size=128, total_tokens=128, progress=False)  # fmt: skip
    emulated = [w for w in caught if "autocast='bfloat16' on a CPU without native bf16" in str(w.message)]
    assert len(emulated) == (1 if this_cpu_native_bf16() is False else 0)  # this machine's real flags
