"""Gated SAE (Rajamanoharan et al. 2024a): a gate decides which latents fire, a magnitude path
(the encoder rescaled by `exp(r_mag)`) decides how much; L1 on the gate, and an auxiliary
reconstruction through a frozen decoder so the gate learns to reconstruct."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rama.sae.base import SAE, LossOutput, SAEConfig, TrainState, fired_and_l0, mse_fvu
from rama.sae.relu import L1Config


@dataclass
class GatedConfig(L1Config):
    """The weight of the L1 penalty on the gate."""


class GatedSAE(SAE):
    config_class = GatedConfig
    reads_saelens = ("gated",)
    dense_at_init = True
    training_coefficient = "l1_coefficient"
    magnitude_lr_scale = 20.0
    settings: GatedConfig

    def __init__(self, cfg: SAEConfig) -> None:
        assert isinstance(cfg.arch, GatedConfig)
        cfg.arch.check(cfg.d_sae)
        super().__init__(cfg)
        self.settings = cfg.arch
        self.b_gate = torch.nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_mag = torch.nn.Parameter(torch.zeros(cfg.d_sae))
        self.r_mag = torch.nn.Parameter(torch.zeros(cfg.d_sae))
        del self.b_enc  # the gated SAE has b_gate and b_mag instead
        self.register_parameter("b_enc", None)

    def optimizer_groups(self) -> list[tuple[list[torch.nn.Parameter], float]]:
        """The L1 penalty shrinks the shared encoder, and only `r_mag` can give the magnitude
        path its size back; at the shared learning rate Adam moves it by about 4e-4 per step,
        far too slowly for a short run (measured on SmolLM2), so it learns 20x faster."""
        rest = [p for name, p in self.named_parameters() if name != "r_mag"]
        return [(rest, 1.0), ([self.r_mag], self.magnitude_lr_scale)]

    def extra_weights(self) -> dict[str, Any]:
        return {"b_gate": self.b_gate, "b_mag": self.b_mag, "r_mag": self.r_mag}

    @classmethod
    def weight_shapes(cls, cfg: SAEConfig) -> dict[str, tuple[int, ...]]:
        shapes = {name: shape for name, shape in super().weight_shapes(cfg).items() if name != "b_enc"}
        return shapes | {"b_gate": (cfg.d_sae,), "b_mag": (cfg.d_sae,), "r_mag": (cfg.d_sae,)}

    def _centred(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.b_dec if self.subtracts_b_dec else x

    def gate_and_magnitude(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        centred = self._centred(x)
        gate = centred @ self.W_enc + self.b_gate
        magnitude = centred @ (self.W_enc * self.r_mag.exp()) + self.b_mag
        return gate, magnitude

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate_and_magnitude(x)[1]

    def activate(self, pre: torch.Tensor) -> torch.Tensor:  # pragma: no cover - encode is overridden
        raise TypeError("a gated SAE encodes from its input, not from one pre-activation")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        gate, magnitude = self.gate_and_magnitude(x)
        return (gate > 0).to(x.dtype) * magnitude.relu()

    def loss(self, x: torch.Tensor, target: torch.Tensor, state: TrainState) -> LossOutput:
        gate, magnitude = self.gate_and_magnitude(x)
        codes = (gate > 0).to(x.dtype) * magnitude.relu()
        reconstruction = self.decode(codes, x)
        mse, fvu = mse_fvu(reconstruction, target)
        gate_acts = gate.relu()
        sparsity = gate_acts.sum(-1).mean()
        frozen = gate_acts @ self.W_dec.detach() + self.b_dec.detach() + self.skip(x)
        aux = (frozen - target).pow(2).sum(-1).mean()
        loss = mse + state.sparsity_scale() * self.settings.l1_coefficient * sparsity + aux
        fired, l0 = fired_and_l0(codes.detach())
        return LossOutput(
            loss, reconstruction, fired, {"fvu": fvu.detach(), "l1": sparsity.detach(), "l0": l0}
        )
