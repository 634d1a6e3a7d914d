"""Matryoshka SAE: the loss is the mean of nested prefixes' FVUs, and the first prefix reconstructs
on its own where a plain BatchTopK SAE's first latents do not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rama.cli.main import parse
from rama.cli.sae import train_config_from_args
from rama.errors import ConfigError
from rama.metrics import fvu
from rama.sae import SAE, MatryoshkaConfig, SAEConfig, TrainConfig, fit
from rama.sae.base import TrainState
from rama.toys import FeatureSuite
from rama.toys.feature_suite import FeatureSuiteConfig


def test_loss_is_the_mean_of_the_prefix_fvus_by_hand() -> None:
    torch.manual_seed(0)
    cfg = SAEConfig(
        d_in=4, d_sae=8, architecture="matryoshka", arch=MatryoshkaConfig(k=2, matryoshka_widths=[2, 8])
    )
    sae = SAE.create(cfg)
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(4) * 0.1)
        sae.b_enc.copy_(torch.randn(8) * 0.1)
    x = torch.randn(6, 4)
    out = sae.loss(x, x, TrainState())
    pre = ((x - sae.b_dec) @ sae.W_enc + sae.b_enc).relu().detach()
    keep = pre.flatten().topk(2 * 6).indices  # the batch's k·B largest
    codes = torch.zeros(48).index_fill(0, keep, 1.0).view(6, 8) * pre
    W_dec, b_dec = sae.W_dec.detach(), sae.b_dec.detach()

    def by_hand(reconstruction: torch.Tensor) -> float:
        return float((reconstruction - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())

    first = by_hand(codes[:, :2] @ W_dec[:2] + b_dec)
    full = by_hand(codes @ W_dec + b_dec)
    assert out.loss.item() == pytest.approx((first + full) / 2, rel=1e-5)
    assert out.terms["fvu_first_prefix"] == pytest.approx(first, rel=1e-5)
    assert out.terms["fvu"] == pytest.approx(full, rel=1e-5)
    torch.testing.assert_close(out.reconstruction.detach(), codes @ W_dec + b_dec)


def test_the_first_prefix_reconstructs_on_its_own() -> None:
    """With power-law feature frequencies, 16 latents of 512 can explain a share of the variance only
    if they were trained to: a BatchTopK SAE's first 16 explain nothing, a Matryoshka's first prefix does."""
    suite = FeatureSuite(FeatureSuiteConfig(frequency_decay=0.8))
    generator = torch.Generator().manual_seed(5)
    train, _ = suite.sample(60_000, generator)
    held_out, _ = suite.sample(4_000, generator)
    first_prefix_fvu = {}
    for architecture, widths in (("batchtopk", None), ("matryoshka", [16, 64, 512])):
        sae = fit(
            train,
            architecture=architecture,
            matryoshka_widths=widths,
            d_sae=512,
            k=5,
            batch_size=1024,
            total_tokens=600_000,
            lr=1e-3,
            progress=False,
        )
        with torch.no_grad():
            codes = sae.encode(held_out)
            full = fvu(sae.decode(codes), held_out)
            codes[:, 16:] = 0
            first_prefix_fvu[architecture] = fvu(sae.decode(codes), held_out)
        assert full < 0.2
    assert first_prefix_fvu["matryoshka"] < 0.85
    assert first_prefix_fvu["batchtopk"] > 0.95


def test_is_saved_as_jumprelu_and_keeps_its_widths(tmp_path: Path) -> None:
    x, _ = FeatureSuite().sample(8192, torch.Generator().manual_seed(0))
    sae = fit(
        x,
        architecture="matryoshka",
        matryoshka_widths=[32, 128],
        d_sae=128,
        k=5,
        batch_size=1024,
        total_tokens=30_000,
        progress=False,
    )
    sae.save(tmp_path / "m")
    written = json.loads((tmp_path / "m" / "cfg.json").read_text())
    assert written["architecture"] == "jumprelu"
    assert written["rama"]["matryoshka_widths"] == [32, 128]
    loaded = SAE.load(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x[:100]), sae.encode(x[:100]))


@pytest.mark.parametrize("widths", [[16, 32], [0, 64], [32, 16, 64], [16, 16, 64]])
def test_bad_widths_are_refused_with_the_rule(widths: list[int]) -> None:
    with pytest.raises(ValueError, match=r"end at d_sae \(64\)"):
        SAE.create(
            SAEConfig(
                d_in=8,
                d_sae=64,
                architecture="matryoshka",
                arch=MatryoshkaConfig(k=4, matryoshka_widths=widths),
            )
        )


def test_widths_for_another_architecture_are_refused() -> None:
    x = torch.randn(2048, 8)
    with pytest.raises(ValueError, match="matryoshka_widths: not a training setting, nor one of the 'topk'"):
        fit(
            x, architecture="topk", matryoshka_widths=[16, 64], d_sae=64, k=4, batch_size=1024, progress=False
        )


def test_the_cli_checks_widths_before_harvesting(capsys: pytest.CaptureFixture[str]) -> None:
    def config(*args: str) -> TrainConfig:
        return train_config_from_args(parse(["sae", "train", *args]))

    widths = config("--arch", "matryoshka", "--width", "4608", "--matryoshka-widths", "72,288,1152,4608")
    assert widths.arch == MatryoshkaConfig(matryoshka_widths=[72, 288, 1152, 4608])
    with pytest.raises(ConfigError, match="end at d_sae"):
        config("--arch", "matryoshka", "--width", "4608", "--matryoshka-widths", "72,4096")
    with pytest.raises(SystemExit):
        config("--arch", "matryoshka", "--width", "4608", "--matryoshka-widths", "72;4608")
    assert "comma-separated integers" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--matryoshka-widths: not a setting of the 'topk' architecture"):
        config("--arch", "topk", "--width", "4608", "--matryoshka-widths", "72,4608")
