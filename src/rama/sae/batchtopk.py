"""BatchTopK SAE (Bussmann et al. 2024): the batch's k·B largest activations, any token any number.

Training picks by batch; inference cannot (one token at a time), so the SAE keeps a running
estimate of the smallest kept activation and uses it as a JumpReLU threshold — which is how it is
saved (SAELens writes BatchTopK as JumpReLU with that threshold).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from rama.errors import ConfigError
from rama.sae.base import SAE, LossOutput, SAEConfig, TrainState, fired_latents, mse_fvu
from rama.sae.topk import TopKConfig, aux_k_loss


@dataclass
class BatchTopKConfig(TopKConfig):
    """k active latents per token on average over a batch (any token may take more or fewer)."""

    def check(self, d_sae: int) -> None:
        super().check(d_sae)
        # its selection is over the whole batch, with a dense backward: no bf16 path (yet)
        if self.select_dtype != "float32":
            raise ConfigError(
                f"select_dtype={self.select_dtype!r} is a topk setting; batchtopk and matryoshka select in float32"
            )


class BatchTopKSAE(SAE):
    config_class = BatchTopKConfig
    saelens_architecture = "jumprelu"  # saved, and loaded back, as the JumpReLU it is at inference
    loads_as = "jumprelu"
    threshold: torch.Tensor
    settings: BatchTopKConfig

    def __init__(self, cfg: SAEConfig) -> None:
        assert isinstance(cfg.arch, BatchTopKConfig)
        cfg.arch.check(cfg.d_sae)
        super().__init__(cfg)
        self.settings = cfg.arch
        self.register_buffer("threshold", torch.tensor(-1.0))  # < 0: not estimated yet

    def select(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat indices and values of the batch's k·B largest positive pre-activations."""
        acts = pre.relu().flatten()
        count = min(acts.numel(), self.settings.k * pre.shape[0])
        values, flat = acts.topk(count, sorted=False)
        return values, flat

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        if self.training or float(self.threshold) < 0:
            values, flat = self.select(pre.reshape(-1, pre.shape[-1]))
            return (
                torch.zeros(pre.numel(), dtype=pre.dtype, device=pre.device)
                .scatter_(0, flat, values)
                .view_as(pre)
            )
        return pre * (pre > self.threshold)

    def loss(self, x: torch.Tensor, target: torch.Tensor, state: TrainState) -> LossOutput:
        pre = self.pre_activations(x)
        values, flat = self.select(pre)
        reconstruction = self._decode_by_rows(flat, values, x.shape[0]) + self.b_dec + self.skip(x)
        _, fvu = mse_fvu(reconstruction, target)
        centred = x - self.b_dec if self.subtracts_b_dec else x
        aux = aux_k_loss(self, pre, centred, target - reconstruction, state.dead_mask(), self.cfg.d_in // 2)
        self._update_threshold(values.detach())
        active = values.detach() > 0
        fired = fired_latents(flat % self.cfg.d_sae, active, self.cfg.d_sae)
        l0 = active.sum().float() / x.shape[0]
        loss = fvu + self.settings.aux_k_coefficient * aux
        return LossOutput(loss, reconstruction, fired, {"fvu": fvu.detach(), "aux_k": aux.detach(), "l0": l0})

    def _decode_by_rows(self, flat: torch.Tensor, values: torch.Tensor, batch: int) -> torch.Tensor:
        """Per-token bags of (latent, value) decoded with embedding_bag: only used rows get gradients."""
        order = flat.argsort()
        flat, values = flat[order], values[order]
        rows, cols = flat // self.cfg.d_sae, flat % self.cfg.d_sae
        counts = torch.bincount(rows, minlength=batch)
        offsets = torch.cumsum(counts, 0) - counts
        return F.embedding_bag(cols, self.W_dec, offsets, per_sample_weights=values, mode="sum")

    @torch.no_grad()
    def _update_threshold(self, kept: torch.Tensor, momentum: float = 0.99) -> None:
        """Running mean of the smallest kept activation, in tensor ops (no host sync per step)."""
        positive = kept > 0
        smallest = torch.where(positive, kept, torch.full_like(kept, float("inf"))).min()
        moved = torch.where(
            self.threshold < 0, smallest, self.threshold * momentum + (1 - momentum) * smallest
        )
        self.threshold.copy_(torch.where(positive.any(), moved, self.threshold))

    @torch.no_grad()
    def calibrate(self, inputs: torch.Tensor, chunk: int = 2048) -> None:
        """Set the inference threshold so tokens keep k latents on average over `inputs`: the
        (k·n)-th largest pre-activation. The running estimate lags the weights while they move.
        Each chunk keeps its 4·k·chunk largest, enough unless one chunk holds 4x its share."""
        inputs = inputs[:16384]
        k = self.settings.k
        kept = []
        for start in range(0, len(inputs), chunk):
            pre = self.pre_activations(inputs[start : start + chunk]).relu().flatten()
            kept.append(pre.topk(min(pre.numel(), 4 * k * chunk), sorted=False).values)
        values = torch.cat(kept)
        count = k * len(inputs)
        if count <= values.numel() and bool((values > 0).any()):
            self.threshold.copy_(values.topk(count, sorted=False).values.min().clamp_min(1e-8))

    def threshold_for_export(self) -> torch.Tensor | None:
        return self.threshold.clamp_min(0).expand(self.cfg.d_sae).clone()
