"""TopK SAE (Gao et al. 2024): keep each token's k largest pre-activations, AuxK for dead latents.

The training hot path never builds a dense `[batch, d_sae]` code for the decoder: it decodes with
`embedding_bag` over the k active rows, so the decoder's backward touches only those rows.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from rama.sae.base import SAE, LossOutput, SAEConfig, TrainState, mse_fvu, register


def sparse_decode(indices: torch.Tensor, values: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """`sum_j values[:, j] * W_dec[indices[:, j]]` -> `[batch, d_out]`, gradients to the used rows only."""
    return F.embedding_bag(indices, W_dec, per_sample_weights=values, mode="sum")


def dense_codes(indices: torch.Tensor, values: torch.Tensor, d_sae: int) -> torch.Tensor:
    return torch.zeros(*indices.shape[:-1], d_sae, dtype=values.dtype, device=values.device).scatter_(
        -1, indices, values
    )


def aux_k_loss(
    sae: SAE, pre: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor | None, k_aux: int
) -> torch.Tensor:
    """Reconstruct the main reconstruction's error from the top `k_aux` dead latents (Gao et al. §A.2)."""
    if dead is None or not bool(dead.any()):
        return pre.new_zeros(())
    k = min(k_aux, int(dead.sum()))
    masked = pre.masked_fill(~dead, float("-inf"))
    values, indices = masked.topk(k, dim=-1)
    values = values.clamp_min(0)
    estimate = sparse_decode(indices, values, sae.W_dec)
    error = (estimate - residual.detach()).pow(2).sum(-1)
    variance = (residual.detach() - residual.detach().mean(0)).pow(2).sum(-1)
    return torch.nan_to_num(error.sum() / variance.sum().clamp_min(1e-12))


@register("topk")
class TopKSAE(SAE):
    def __init__(self, cfg: SAEConfig) -> None:
        if not cfg.k or not 0 < cfg.k <= cfg.d_sae:
            raise ValueError(f"a topk SAE needs 0 < k <= d_sae ({cfg.d_sae}); got k={cfg.k}")
        super().__init__(cfg)

    def select(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, indices = pre.topk(int(self.cfg.k or 1), dim=-1, sorted=False)
        return values.relu(), indices

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        values, indices = self.select(pre)
        return dense_codes(indices, values, self.cfg.d_sae)

    def loss(self, x: torch.Tensor, target: torch.Tensor, state: TrainState) -> LossOutput:
        pre = self.pre_activations(x)
        values, indices = self.select(pre)
        reconstruction = sparse_decode(indices, values, self.W_dec) + self.b_dec + self.skip(x)
        _, fvu = mse_fvu(reconstruction, target)
        aux = aux_k_loss(self, pre, target - reconstruction, state.dead_mask(), self.cfg.d_in // 2)
        loss = fvu + self.cfg.aux_k_coefficient * aux
        codes = dense_codes(indices.detach(), values.detach(), self.cfg.d_sae)
        return LossOutput(loss, reconstruction, codes, {"fvu": fvu.item(), "aux_k": aux.item()})
