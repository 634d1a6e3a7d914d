"""ReLU SAE with an L1 penalty weighted by decoder norms (Anthropic, "Towards Monosemanticity" and
its April 2024 training update): the decoder is free in norm, so the penalty `Σ f_i ‖W_dec_i‖`
cannot be dodged by shrinking codes and growing decoder rows. Saved as SAELens's "standard"."""

from __future__ import annotations

import torch

from rama.sae.base import SAE, LossOutput, SAEConfig, TrainState, fired_and_l0, mse_fvu, register


@register("standard")
class ReLUSAE(SAE):
    decoder_unit_norm = False

    training_coefficient = "l1_coefficient"

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
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
        loss = mse + state.sparsity_scale() * self.cfg.l1_coefficient * sparsity
        fired, l0 = fired_and_l0(codes.detach())
        return LossOutput(loss, reconstruction, fired, {"fvu": fvu.item(), "l1": sparsity.item(), "l0": l0})
