"""Adding an architecture is one file and one registry line: a tiny one, defined here, trains with
`fit`, saves and loads like the built-in ones; a second registration under a taken name is refused."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from rama.errors import ConfigError
from rama.sae import REGISTRY, SAE, ArchConfig, TrainConfig, fit, register
from rama.sae.base import LossOutput, TrainState, fired_and_l0, mse_fvu, setting
from rama.toys import FeatureSuite


@dataclass
class ShiftConfig(ArchConfig):
    shift: float = setting(0.5, "subtracted from every pre-activation before the ReLU")

    def check(self, d_sae: int) -> None:
        if self.shift < 0:
            raise ConfigError(f"shift must be >= 0; got {self.shift}")


class ShiftedReLUSAE(SAE):
    """ReLU(pre - shift): sparsity from a fixed threshold, no penalty."""

    config_class = ShiftConfig
    reads_saelens = ("shifted_relu_test",)

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        assert isinstance(self.cfg.arch, ShiftConfig)
        return (pre - self.cfg.arch.shift).relu()

    def loss(self, x: torch.Tensor, target: torch.Tensor, state: TrainState) -> LossOutput:
        codes = self.encode(x)
        reconstruction = self.decode(codes, x)
        mse, fvu = mse_fvu(reconstruction, target)
        fired, l0 = fired_and_l0(codes.detach())
        return LossOutput(mse, reconstruction, fired, {"fvu": fvu.detach(), "l0": l0})


@pytest.fixture
def registered() -> Any:
    register("shifted_relu_test", ShiftedReLUSAE)  # the one line a new architecture adds
    yield
    del REGISTRY["shifted_relu_test"]


def test_a_new_architecture_trains_saves_and_loads(registered: Any, tmp_path: Path) -> None:
    x, _ = FeatureSuite().sample(8192, torch.Generator().manual_seed(0))
    sae = fit(x, architecture="shifted_relu_test", shift=0.2, d_sae=128, batch_size=1024,
              total_tokens=20_480, lr=1e-3, progress=False)  # fmt: skip
    assert isinstance(sae, ShiftedReLUSAE) and sae.cfg.arch == ShiftConfig(shift=0.2)
    with torch.no_grad():
        start = fvu_of(SAE.create(sae.cfg), x)
        assert fvu_of(sae, x) < 0.8 * start  # it learned (0.55 against 0.77 untrained)
    sae.save(tmp_path / "s")
    loaded = SAE.load(tmp_path / "s")
    assert isinstance(loaded, ShiftedReLUSAE) and loaded.cfg.arch == ShiftConfig(shift=0.2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x[:100]), sae(x[:100]))
    with pytest.raises(ConfigError, match="shift must be >= 0"):
        TrainConfig.create(architecture="shifted_relu_test", shift=-1.0)


def fvu_of(sae: SAE, x: torch.Tensor) -> float:
    from rama.metrics import fvu

    return fvu(sae(x), x)


def test_a_taken_name_is_refused(registered: Any) -> None:
    with pytest.raises(ConfigError, match="'shifted_relu_test' is already registered"):
        register("shifted_relu_test", ShiftedReLUSAE)
    with pytest.raises(ConfigError, match="'topk' is already registered"):
        register("topk", ShiftedReLUSAE)
    assert REGISTRY["topk"].__name__ == "TopKSAE"
