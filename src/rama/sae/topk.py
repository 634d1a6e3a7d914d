"""TopK SAE (Gao et al. 2024): keep each token's k largest pre-activations, AuxK for dead latents.

The training hot path never builds a dense `[batch, d_sae]` code for the decoder: it decodes with
`embedding_bag` over the k active rows, so the decoder's backward touches only those rows.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

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
    select_dtype: str = setting(
        "float32",
        "dtype of the encoder matmul that picks a token's k latents in training (float32 | bfloat16); "
        "the picked latents' values are always fp32 (topk only)",
    )

    select_dtypes: ClassVar[tuple[str, ...]] = ("float32", "bfloat16")

    def check(self, d_sae: int) -> None:
        if not isinstance(self.k, int) or not 0 < self.k <= d_sae:
            raise ConfigError(f"k must be an integer with 0 < k <= d_sae ({d_sae}); got k={self.k}")
        if self.aux_k_coefficient < 0:
            raise ConfigError(f"aux_k_coefficient must be >= 0; got {self.aux_k_coefficient}")
        if self.select_dtype not in self.select_dtypes:
            raise ConfigError(
                f"select_dtype must be one of {', '.join(self.select_dtypes)}; got {self.select_dtype!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """`select_dtype` only when it is not the default, so cfg.json and train_config.json stay as
        they were before the setting existed (checkpoints from then resume; a bf16 run's do not)."""
        settings = super().to_dict()
        if settings["select_dtype"] == "float32":
            del settings["select_dtype"]
        return settings


NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # /proc/cpuinfo flags of a native bf16 matmul


def native_bf16(cpuinfo: str) -> bool:
    """Whether a Linux `/proc/cpuinfo` text names a CPU that multiplies bf16 natively."""
    flags = {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split()}
    return bool(flags & NATIVE_BF16_FLAGS)


@functools.cache
def this_cpu_native_bf16() -> bool | None:
    """This machine's answer, or None where /proc/cpuinfo cannot be read (not Linux)."""
    try:
        return native_bf16(Path("/proc/cpuinfo").read_text())
    except OSError:
        return None


def warn_if_emulated_bf16(setting: str, dtype: str, device: str) -> None:
    """A bf16 matmul (`setting` = select_dtype or autocast) on a CPU without native bf16 is emulated:
    on an AVX2-only AMD EPYC, 45 s against fp32's 0.4 s for one [4096, 576] @ [576, 9216]. Say so
    before training."""
    if dtype == "bfloat16" and torch.device(device).type == "cpu" and this_cpu_native_bf16() is False:
        warnings.warn(
            f"{setting}='bfloat16' on a CPU without native bf16 (no avx512_bf16 or amx_bf16 in "
            "/proc/cpuinfo): the bf16 matmul is emulated and can be ~100x slower than float32 here; "
            f"use {setting}='float32' (the default) on this machine",
            RuntimeWarning,
            stacklevel=3,
        )


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
        return (None, *selected_grads(grad, x, W_enc, W_enc.T.contiguous(), indices))


def selected_grads(
    grad: torch.Tensor, x: torch.Tensor, W_enc: torch.Tensor, W_rows: torch.Tensor, indices: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
    """Gradients of `pre[b, indices[b, j]]` (`grad [batch, k]`) to x, W_enc, b_enc (and none to the
    indices), through the selected entries only; `W_rows` is W_enc.T made contiguous `[d_sae, d_in]`."""
    grad_x = F.embedding_bag(indices, W_rows, per_sample_weights=grad, mode="sum")
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
    return grad_x, grad_W_enc, grad_b_enc, None


def exact_pre(
    x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, indices: torch.Tensor
) -> torch.Tensor:
    """`(x @ W_enc + b_enc).gather(1, indices)` in fp32 without the dense matmul: a sampled matmul
    computes only the `[batch, k]` selected dot products (10x faster on the CPU than gathering the
    k rows of W_enc.T per token). `indices` must be sorted along each row (CSR order)."""
    batch, k = indices.shape
    rows = torch.arange(0, batch * k + 1, k, device=indices.device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
        pattern = torch.sparse_csr_tensor(
            rows, indices.flatten(), x.new_zeros(batch * k), (batch, W_enc.shape[1]), check_invariants=False
        )
    dots = torch.sparse.sampled_addmm(pattern, x, W_enc, beta=0.0).values().view(batch, k)
    return dots + b_enc[indices]


def rerank(
    low: torch.Tensor, x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, k: int
) -> torch.Tensor:
    """Each row's k latents `[batch, k]` (sorted by latent id): the 2k largest of the bf16
    pre-activations `low`, re-ranked by their fp32 values. On SmolLM2 layer 6 this keeps 100% of
    fp32's pick (98.9% with k bf16 candidates); the second sampled matmul costs ~2% of a step."""
    candidates = low.topk(min(2 * k, low.shape[1]), dim=-1, sorted=False).indices.sort(dim=-1).values
    best = exact_pre(x, W_enc, b_enc, candidates).topk(k, dim=-1, sorted=False).indices
    return candidates.gather(1, best).sort(dim=-1).values


class SelectedPre(torch.autograd.Function):
    """The fp32 pre-activations of latents picked elsewhere (by a bf16 matmul; `indices` sorted per
    row): `exact_pre` forward, `GatherPre`'s sparse backward with the given contiguous W_enc.T."""

    @staticmethod
    def forward(
        ctx: Any,
        W_rows: torch.Tensor,
        x: torch.Tensor,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        indices: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, W_enc, W_rows, indices)
        return exact_pre(x, W_enc, b_enc, indices)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        x, W_enc, W_rows, indices = ctx.saved_tensors
        return (None, *selected_grads(grad, x, W_enc, W_rows, indices))


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
    W_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reconstruct the main reconstruction's error from the top `k_aux` dead latents (Gao et al. §A.2).

    `pre` are the pre-activations (no gradient) of the encoder input `x`; with `W_rows` (W_enc.T,
    contiguous) they only pick the latents (a bf16 `pre`), whose values are then computed in fp32.
    """
    k = 0 if dead is None else min(k_aux, int(dead.sum()))  # the step's one host sync: the top-k's size
    if dead is None or k == 0:
        return residual.new_zeros(())
    # the top k among the dead columns only: no masked copy of the whole [batch, d_sae] pre
    dead_ids = dead.nonzero().squeeze(1)
    _, local = pre.detach().index_select(1, dead_ids).topk(k, dim=-1, sorted=False)
    indices = dead_ids[local]
    if W_rows is not None:
        indices = indices.sort(dim=-1).values  # exact_pre's CSR order
    if W_rows is None:
        values = GatherPre.apply(pre.detach(), x, sae.W_enc, sae.b_enc, indices).relu()
    else:
        values = SelectedPre.apply(W_rows, x, sae.W_enc, sae.b_enc, indices).relu()
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
        fp32 = not self.selects_in_bf16(centred)  # only the fp32 path writes a [batch, d_sae] fp32 pre
        pre_buffer = state.workspace("pre", (centred.shape[0], self.cfg.d_sae), centred) if fp32 else None
        pre, indices, values, W_rows = self.selected(centred, pre_buffer)
        reconstruction = sparse_decode(indices, values, self.W_dec) + self.b_dec + self.skip(x)
        _, fvu = mse_fvu(reconstruction, target)
        residual = target - reconstruction
        aux = aux_k_loss(self, pre, centred, residual, state.dead_mask(), self.cfg.d_in // 2, W_rows)
        loss = fvu + self.settings.aux_k_coefficient * aux
        active = values.detach() > 0
        fired = fired_latents(indices, active, self.cfg.d_sae)
        l0 = active.sum(-1).float().mean()
        return LossOutput(loss, reconstruction, fired, {"fvu": fvu.detach(), "aux_k": aux.detach(), "l0": l0})

    def selects_in_bf16(self, x: torch.Tensor) -> bool:
        """With `select_dtype="bfloat16"`, or under bf16 autocast: the dense matmul only picks latents,
        so autocast gets the bf16 selection, whose values stay exact fp32."""
        return self.settings.select_dtype == "bfloat16" or torch.is_autocast_enabled(x.device.type)

    def selected(
        self, centred: torch.Tensor, out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Training's encoder: (pre-activations without gradient `[batch, d_sae]`, each token's k
        latents `[batch, k]`, their fp32 values after ReLU with gradient, W_enc.T if it was made).
        `out`, a reusable fp32 `[batch, d_sae]` tensor, receives the float32 path's pre-activations.

        When `selects_in_bf16` the dense matmul, half the step, runs in bf16 and only picks the
        latents; their values are recomputed in fp32."""
        k = self.settings.k
        if not self.selects_in_bf16(centred):
            with torch.no_grad():
                pre = torch.addmm(self.b_enc, centred, self.W_enc, out=out)
                _, indices = pre.topk(k, dim=-1, sorted=False)
            return pre, indices, GatherPre.apply(pre, centred, self.W_enc, self.b_enc, indices).relu(), None
        with torch.no_grad():
            W_rows = self.W_enc.T.contiguous()
            low = torch.bfloat16
            pre = torch.addmm(self.b_enc.to(low), centred.to(low), self.W_enc.to(low))
            indices = rerank(pre, centred, self.W_enc, self.b_enc, k)
        values = SelectedPre.apply(W_rows, centred, self.W_enc, self.b_enc, indices).relu()
        return pre, indices, values, W_rows
