"""TopK SAE (Gao et al. 2024): keep each token's k largest pre-activations, AuxK for dead latents.

The training hot path never builds a dense `[batch, d_sae]` code for the decoder: it decodes with
`embedding_bag` over the k active rows, so the decoder's backward touches only those rows.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from rama.sae.base import SAE, LossOutput, SAEConfig, TrainState, mse_fvu, register


class GatherPre(torch.autograd.Function):
    """`pre.gather(1, indices)` for pre-activations computed without autograd, with the gradient the
    dense `x @ W_enc + b_enc` would have had — but only through the gathered entries: the encoder's
    weight gradient is a sparse-dense product, never a second full-width matmul (sparsify's trick)."""

    @staticmethod
    def forward(
        ctx: Any,
        pre: torch.Tensor,
        x: torch.Tensor,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        indices: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, W_enc, indices)
        return pre.gather(1, indices)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        x, W_enc, indices = ctx.saved_tensors
        # W_enc is [d_in, d_sae]; embedding_bag over its transposed *view* is ~40x slower on the CPU
        # than one contiguous copy (5 M floats) and a gather of the k rows per token
        grad_x = F.embedding_bag(indices, W_enc.T.contiguous(), per_sample_weights=grad, mode="sum")
        rows = torch.arange(x.shape[0], device=x.device).repeat_interleave(indices.shape[1])
        sparse = torch.sparse_coo_tensor(
            torch.stack([indices.flatten(), rows]),
            grad.flatten(),
            (W_enc.shape[1], x.shape[0]),
            check_invariants=False,
        )
        grad_W_enc = torch.sparse.mm(sparse, x).T
        grad_b_enc = torch.zeros(W_enc.shape[1], dtype=grad.dtype, device=grad.device).index_add_(
            0, indices.flatten(), grad.flatten()
        )
        return None, grad_x, grad_W_enc, grad_b_enc, None


def sparse_decode(indices: torch.Tensor, values: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """`sum_j values[:, j] * W_dec[indices[:, j]]` -> `[batch, d_out]`, gradients to the used rows only."""
    return F.embedding_bag(indices, W_dec, per_sample_weights=values, mode="sum")


def dense_codes(indices: torch.Tensor, values: torch.Tensor, d_sae: int) -> torch.Tensor:
    return torch.zeros(*indices.shape[:-1], d_sae, dtype=values.dtype, device=values.device).scatter_(
        -1, indices, values
    )


def aux_k_loss(
    sae: SAE,
    pre: torch.Tensor,
    x: torch.Tensor,
    residual: torch.Tensor,
    dead: torch.Tensor | None,
    k_aux: int,
) -> torch.Tensor:
    """Reconstruct the main reconstruction's error from the top `k_aux` dead latents (Gao et al. §A.2).

    `pre` are the pre-activations (no gradient) of the encoder input `x`.
    """
    if dead is None or not bool(dead.any()):
        return residual.new_zeros(())
    k = min(k_aux, int(dead.sum()))
    _, indices = pre.detach().masked_fill(~dead, float("-inf")).topk(k, dim=-1, sorted=False)
    values = GatherPre.apply(pre.detach(), x, sae.W_enc, sae.b_enc, indices).relu()
    estimate = sparse_decode(indices, values, sae.W_dec)
    error = (estimate - residual.detach()).pow(2).sum(-1)
    variance = (residual.detach() - residual.detach().mean(0)).pow(2).sum(-1)
    return torch.nan_to_num(error.sum() / variance.sum().clamp_min(1e-12))


@register("topk")
class TopKSAE(SAE):
    takes_k = True

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
        centred = x - self.b_dec if self.subtracts_b_dec else x
        with torch.no_grad():
            pre = torch.addmm(self.b_enc, centred, self.W_enc)
            _, indices = pre.topk(int(self.cfg.k or 1), dim=-1, sorted=False)
        values = GatherPre.apply(pre, centred, self.W_enc, self.b_enc, indices).relu()
        reconstruction = sparse_decode(indices, values, self.W_dec) + self.b_dec + self.skip(x)
        _, fvu = mse_fvu(reconstruction, target)
        aux = aux_k_loss(self, pre, centred, target - reconstruction, state.dead_mask(), self.cfg.d_in // 2)
        loss = fvu + self.cfg.aux_k_coefficient * aux
        fired = torch.zeros(self.cfg.d_sae, dtype=torch.bool, device=x.device)
        fired[indices[values > 0]] = True
        l0 = float((values > 0).sum(-1).float().mean())
        return LossOutput(loss, reconstruction, fired, {"fvu": fvu.item(), "aux_k": aux.item(), "l0": l0})
