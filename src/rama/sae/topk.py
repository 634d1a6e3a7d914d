"""TopK SAE (Gao et al. 2024): keep each token's k largest pre-activations, AuxK for dead latents.

The training hot path never builds a dense `[batch, d_sae]` code for the decoder: it decodes with
`embedding_bag` over the k active rows, so the decoder's backward touches only those rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from rama.errors import ConfigError
from rama.metrics import fvu_tensor
from rama.sae.base import SAE, ArchConfig, LossOutput, SAEConfig, TrainState, fired_latents, mse_fvu, setting


@dataclass
class TopKConfig(ArchConfig):
    """k active latents per token; AuxK reconstructs the error from dead latents."""

    k: int = setting(32, "active latents per token (on average over a batch for batchtopk, matryoshka)")
    aux_k_coefficient: float = setting(1 / 32, "weight of the AuxK loss on dead latents (Gao et al. 2024)")

    def check(self, d_sae: int) -> None:
        if not isinstance(self.k, int) or not 0 < self.k <= d_sae:
            raise ConfigError(f"k must be an integer with 0 < k <= d_sae ({d_sae}); got k={self.k}")
        if self.aux_k_coefficient < 0:
            raise ConfigError(f"aux_k_coefficient must be >= 0; got {self.aux_k_coefficient}")


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
    k = 0 if dead is None else min(k_aux, int(dead.sum()))  # the step's one host sync: the top-k's size
    if dead is None or k == 0:
        return residual.new_zeros(())
    _, indices = pre.detach().masked_fill(~dead, float("-inf")).topk(k, dim=-1, sorted=False)
    # a dead latent's pre-activation is -inf only if fewer than k are dead: masked values relu to 0
    values = GatherPre.apply(pre.detach(), x, sae.W_enc, sae.b_enc, indices).relu()
    estimate = sparse_decode(indices, values, sae.W_dec)
    return torch.nan_to_num(fvu_tensor(estimate, residual.detach()))


class TopKSAE(SAE):
    config_class = TopKConfig
    reads_saelens = ("topk",)
    settings: TopKConfig

    def __init__(self, cfg: SAEConfig) -> None:
        assert isinstance(cfg.arch, TopKConfig)
        cfg.arch.check(cfg.d_sae)
        super().__init__(cfg)
        self.settings = cfg.arch

    def saelens_settings(self) -> dict[str, Any]:
        return {"k": self.settings.k, "rescale_acts_by_decoder_norm": False}

    def select(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, indices = pre.topk(self.settings.k, dim=-1, sorted=False)
        return values.relu(), indices

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        values, indices = self.select(pre)
        return dense_codes(indices, values, self.cfg.d_sae)

    def loss(self, x: torch.Tensor, target: torch.Tensor, state: TrainState) -> LossOutput:
        centred = x - self.b_dec if self.subtracts_b_dec else x
        with torch.no_grad():
            pre = torch.addmm(self.b_enc, centred, self.W_enc)
            _, indices = pre.topk(self.settings.k, dim=-1, sorted=False)
        values = GatherPre.apply(pre, centred, self.W_enc, self.b_enc, indices).relu()
        reconstruction = sparse_decode(indices, values, self.W_dec) + self.b_dec + self.skip(x)
        _, fvu = mse_fvu(reconstruction, target)
        aux = aux_k_loss(self, pre, centred, target - reconstruction, state.dead_mask(), self.cfg.d_in // 2)
        loss = fvu + self.settings.aux_k_coefficient * aux
        active = values.detach() > 0
        fired = fired_latents(indices, active, self.cfg.d_sae)
        l0 = active.sum(-1).float().mean()
        return LossOutput(loss, reconstruction, fired, {"fvu": fvu.detach(), "aux_k": aux.detach(), "l0": l0})
