"""ReLU SAE with an L1 penalty weighted by decoder norms (Anthropic, "Towards Monosemanticity" and
its April 2024 training update): the decoder is free in norm, so the penalty `Σ f_i ‖W_dec_i‖`
cannot be dodged by shrinking codes and growing decoder rows. Saved as SAELens's "standard"."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rama.errors import ConfigError
from rama.sae.base import SAE, ArchConfig, LossOutput, SAEConfig, TrainState, fired_and_l0, mse_fvu, setting


@dataclass
class L1Config(ArchConfig):
    """The weight of an L1 sparsity penalty (ReLU and Gated SAEs)."""

    l1_coefficient: float = setting(
        0.0, "weight of the L1 penalty (standard, gated; training needs it > 0)", aliases=("l1",)
    )

    def check(self, d_sae: int) -> None:
        if self.l1_coefficient < 0:
            raise ConfigError(f"l1_coefficient must be >= 0; got {self.l1_coefficient}")


class ReLUSAE(SAE):
    config_class = L1Config
    reads_saelens = ("standard", "transcoder", "skip_transcoder")
    decoder_unit_norm = False
    training_coefficient = "l1_coefficient"
    settings: L1Config

    def __init__(self, cfg: SAEConfig) -> None:
        assert isinstance(cfg.arch, L1Config)
        cfg.arch.check(cfg.d_sae)
        super().__init__(cfg)
        self.settings = cfg.arch
        with torch.no_grad():  # April 2024 update: decoder rows start at norm 0.1
            self.W_dec.mul_(0.1)
            if cfg.d_in == cfg.output_dim:
                self.W_enc.copy_(self.W_dec.T)

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return pre.relu()

    def loss(self, x: torch.Tensor, target: torch.Tensor, state: TrainState) -> LossOutput:
        codes = self.encode(x)
        reconstruction = self.decode(codes, x)
        mse, fvu = mse_fvu(reconstruction, target)
        sparsity = (codes * self.W_dec.norm(dim=1)).sum(-1).mean()
        loss = mse + state.sparsity_scale() * self.settings.l1_coefficient * sparsity
        fired, l0 = fired_and_l0(codes.detach())
        return LossOutput(
            loss, reconstruction, fired, {"fvu": fvu.detach(), "l1": sparsity.detach(), "l0": l0}
        )
