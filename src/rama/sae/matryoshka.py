"""Matryoshka BatchTopK SAE (Nabeshima 2024; Bussmann et al. 2025): the latents come in nested
prefixes, and every prefix is trained to reconstruct the input on its own.

A plain SAE lets a specific latent absorb a general one ("Paris" swallows "city"), so a broad concept
has no latent of its own. Here the first prefix must reconstruct without the later latents, which
keeps broad features in it; later prefixes add detail. Selection is BatchTopK over all latents, and
the SAE is saved as the JumpReLU it is at inference, as SAELens saves it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import torch

from rama.errors import ConfigError
from rama.sae.base import LossOutput, SAEConfig, TrainState, fired_latents, mse_fvu
from rama.sae.batchtopk import BatchTopKConfig, BatchTopKSAE
from rama.sae.topk import aux_k_loss


def default_widths(d_sae: int) -> list[int]:
    """d_sae/64, d_sae/16, d_sae/4 and all of it: each prefix four times the one before."""
    widths = [d_sae // 64, d_sae // 16, d_sae // 4, d_sae]
    return sorted({w for w in widths if w > 0})


@dataclass
class MatryoshkaConfig(BatchTopKConfig):
    """BatchTopK's settings and the nested prefix widths."""

    matryoshka_widths: list[int] | None = field(
        default=None,
        metadata={"help": "matryoshka prefix widths, rising to d_sae (default: d_sae/64, /16, /4, d_sae)"},
    )

    def widths(self, d_sae: int) -> list[int]:
        """The prefix widths (default `default_widths`), checked."""
        widths = [int(w) for w in self.matryoshka_widths or default_widths(d_sae)]
        increasing = all(a < b for a, b in pairwise(widths))
        if not widths or widths[0] <= 0 or not increasing or widths[-1] != d_sae:
            raise ConfigError(
                f"matryoshka_widths must increase strictly from above 0 and end at d_sae ({d_sae}), "
                f"e.g. {default_widths(d_sae)}; got {widths}"
            )
        return widths

    def check(self, d_sae: int) -> None:
        super().check(d_sae)
        self.widths(d_sae)


class MatryoshkaSAE(BatchTopKSAE):
    config_class = MatryoshkaConfig

    def __init__(self, cfg: SAEConfig) -> None:
        assert isinstance(cfg.arch, MatryoshkaConfig)
        self.widths = cfg.arch.widths(cfg.d_sae)
        super().__init__(cfg)

    def loss(self, x: torch.Tensor, target: torch.Tensor, state: TrainState) -> LossOutput:
        """The mean of every prefix's FVU: prefix i decodes only latents below widths[i]."""
        pre = self.pre_activations(x)
        values, flat = self.select(pre)
        latents = flat % self.cfg.d_sae
        reconstruction = torch.zeros_like(target) + self.b_dec + self.skip(x)  # [batch, d_out]
        prefix_fvus = []
        start = 0
        for end in self.widths:
            group = (latents >= start) & (latents < end)
            reconstruction = reconstruction + self._decode_by_rows(flat[group], values[group], x.shape[0])
            prefix_fvus.append(mse_fvu(reconstruction, target)[1])
            start = end
        centred = x - self.b_dec if self.subtracts_b_dec else x
        aux = aux_k_loss(self, pre, centred, target - reconstruction, state.dead_mask(), self.cfg.d_in // 2)
        self._update_threshold(values.detach())
        active = values.detach() > 0
        fired = fired_latents(latents, active, self.cfg.d_sae)
        loss = torch.stack(prefix_fvus).mean() + self.settings.aux_k_coefficient * aux
        terms = {
            "fvu": prefix_fvus[-1].detach(),
            "fvu_first_prefix": prefix_fvus[0].detach(),
            "aux_k": aux.detach(),
            "l0": active.sum().float() / x.shape[0],
        }
        return LossOutput(loss, reconstruction, fired, terms)
