"""Per-head attention weights of any supported architecture, in one convention (row vectors).

A head reads the residual stream `x [d_model]` as `q = x W_Q + b_Q`, `k = x W_K + b_K`,
`v = x W_V + b_V` (each `[d_head]`) and writes `z W_O` into it, so the sum over heads plus `b_O` is
the output projection's output. Weights are read from the real HF modules through the adapter's
own site descriptions (the same head views `hook_q`/`hook_k`/`hook_v`/`hook_z` use), so fused or
interleaved q|k|v layouts come out right without per-architecture code.

Grouped-query attention: `W_K`/`W_V` keep the model's `n_kv_heads`; `kv_head[h]` names the
key/value head query head `h` reads (HF's `repeat_kv`: `h // (n_heads / n_kv_heads)`). Nothing is
copied to "ungroup" them; `HeadWeights.key(layer, head)` / `.value(layer, head)` return views.

Pre-attention norm (`fold_norm=True`, the default): the norm's scale (and, for LayerNorm, its
centring and bias) is folded into `W_Q`/`W_K`/`W_V` and `b_Q`/`b_K`/`b_V`. The folded weights then
act on the residual divided by the norm's per-token scale (`x / rms(x)` for RMSNorm,
`x / std(x)` for LayerNorm): `ln1(x) W_Q + b_Q == (x / scale(x)) W_Q' + b_Q'`. That scale is one
positive number per token, so it changes no direction, sign or eigenvalue. Gemma's RMSNorm
multiplies by `1 + weight`, which is what is folded. Post-LN blocks (BERT) read `resid_pre` with no
norm in front: nothing to fold. Gemma 2/3's extra norm after the attention output is not folded:
`W_O` maps to `o_proj`'s output, which those models normalise again before the residual.

Rotary embeddings (Llama, SmolLM2, NeoX, Gemma) rotate `q` and `k` after these projections, by
an angle that depends on position; `W_Q`/`W_K` here are the projections before rotation (what
`hook_q`/`hook_k` hold). See `rama.circuits.weight_circuits` for what that means for QK circuits.
Qwen3's per-head q/k norms (after the projection) are not included.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from rama.errors import InputError
from rama.models.adapter import Adapter
from rama.models.gemma import GemmaAdapter
from rama.models.spec import ModuleInput, ModuleOutput, View


@dataclass(frozen=True)
class HeadWeights:
    """Every layer's attention weights; biases are None where the model has none."""

    W_Q: torch.Tensor  # [layer, head, d_model, d_head]
    W_K: torch.Tensor  # [layer, kv_head, d_model, d_head]
    W_V: torch.Tensor  # [layer, kv_head, d_model, d_head]
    W_O: torch.Tensor  # [layer, head, d_head, d_model]
    b_Q: torch.Tensor | None  # [layer, head, d_head]
    b_K: torch.Tensor | None  # [layer, kv_head, d_head]
    b_V: torch.Tensor | None  # [layer, kv_head, d_head]
    b_O: torch.Tensor | None  # [layer, d_model]
    kv_head: torch.Tensor  # [head] long: the key/value head each query head reads
    norm_folded: bool  # True when the pre-attention norm is folded into W_Q/W_K/W_V and their biases

    @property
    def n_layers(self) -> int:
        return int(self.W_Q.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.W_Q.shape[1])

    def key(self, layer: int, head: int) -> torch.Tensor:
        """`[d_model, d_head]`: `W_K` of the key/value head that query head `head` reads (a view)."""
        return self.W_K[layer, int(self.kv_head[head])]

    def value(self, layer: int, head: int) -> torch.Tensor:
        """`[d_model, d_head]`: `W_V` of the key/value head that query head `head` reads (a view)."""
        return self.W_V[layer, int(self.kv_head[head])]


@dataclass(frozen=True)
class NormAffine:
    """A norm's learned affine part: `norm(x) = normalise(x) * scale + shift`."""

    scale: torch.Tensor  # [d_model]
    shift: torch.Tensor | None  # [d_model]; LayerNorm's bias
    centres: bool  # LayerNorm subtracts the mean first; RMSNorm does not


def linear_matrix(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(`W [d_in, d_out]`, `b [d_out]` or None) of an `nn.Linear` or GPT-2's `Conv1D`, detached."""
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise InputError(f"{type(module).__name__} is not a linear layer with a 2-D weight")
    matrix = weight.T if isinstance(module, nn.Linear) else weight  # Conv1D stores [d_in, d_out]
    if not isinstance(module, nn.Linear) and not hasattr(module, "nf"):
        raise InputError(f"{type(module).__name__}: rama reads head weights from nn.Linear or Conv1D only")
    return matrix.detach().float(), None if bias is None else bias.detach().float()


def _projection(
    adapter: Adapter, block: str, spec: ModuleOutput | ModuleInput
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(`[head, d_model, d_head]`, `[head, d_head]` or None) of one q/k/v projection, split into
    heads by the site's own view (`Heads`, `FusedSlice` or `InterleavedHeads`)."""
    view: View | None = spec.view
    if view is None:
        raise InputError(f"{spec.path} has no head view; cannot split it into heads")
    matrix, bias = linear_matrix(adapter.hf_model.get_submodule(f"{block}.{spec.path}"))
    weight = view.get(matrix.contiguous())  # [d_model, head, d_head]: rows are the input dimension
    heads_bias = None if bias is None else view.get(bias[None])[0]
    return weight.transpose(0, 1).contiguous(), heads_bias


def norm_affine(adapter: Adapter, path: str) -> NormAffine:
    """The affine part of the norm at `path` (Gemma's RMSNorm scales by `1 + weight`)."""
    module = adapter.hf_model.get_submodule(path)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise InputError(f"{path} ({type(module).__name__}) has no weight: not a norm rama can fold")
    scale = weight.detach().float() + (1.0 if isinstance(adapter, GemmaAdapter) else 0.0)
    bias = getattr(module, "bias", None)
    shift = bias.detach().float() if isinstance(bias, torch.Tensor) else None
    return NormAffine(scale, shift, isinstance(module, nn.LayerNorm))


def fold_reader(
    norm: NormAffine, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A weight that reads a norm's output `[..., d_model, d_out]` (and its bias `[..., d_out]`) as one
    that reads the residual divided by the norm's per-token scale: scale and centring folded in."""
    folded = norm.scale[:, None] * weight
    if norm.centres:
        folded = folded - folded.mean(dim=-2, keepdim=True)  # (I - 11ᵀ/d) diag(γ) W
    if norm.shift is not None:
        shifted = norm.shift @ weight  # [..., d_out]
        bias = shifted if bias is None else bias + shifted
    return folded, bias


def _stack(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    present = [p for p in parts if p is not None]
    return torch.stack(present) if len(present) == len(parts) and present else None


def head_weights(adapter: Adapter, fold_norm: bool = True) -> HeadWeights:
    """Every layer's `W_Q`, `W_K`, `W_V`, `W_O` and biases (see the module docstring for the convention)."""
    cfg = adapter.config()
    paths = adapter.block_paths()
    parts: dict[str, list[torch.Tensor | None]] = {name: [] for name in ("Q", "K", "V", "bQ", "bK", "bV")}
    outputs: list[torch.Tensor] = []
    out_biases: list[torch.Tensor | None] = []
    pre_norm = fold_norm and paths.ln1 is not None and paths.resid_mid is None
    with torch.no_grad():
        for layer in range(adapter.n_layers):
            block = adapter.block_path(layer)
            norm = norm_affine(adapter, f"{block}.{paths.ln1}") if pre_norm else None
            for name, spec in (("Q", paths.q), ("K", paths.k), ("V", paths.v)):
                weight, bias = _projection(adapter, block, spec)
                if norm is not None:
                    weight, bias = fold_reader(norm, weight, bias)
                parts[name].append(weight)
                parts["b" + name].append(bias)
            matrix, out_bias = linear_matrix(adapter.hf_model.get_submodule(f"{block}.{paths.out_proj}"))
            outputs.append(matrix.reshape(cfg.n_heads, cfg.d_head, cfg.d_model))
            out_biases.append(out_bias)
    group = cfg.n_heads // cfg.n_kv_heads
    return HeadWeights(
        W_Q=torch.stack([p for p in parts["Q"] if p is not None]),
        W_K=torch.stack([p for p in parts["K"] if p is not None]),
        W_V=torch.stack([p for p in parts["V"] if p is not None]),
        W_O=torch.stack(outputs),
        b_Q=_stack(parts["bQ"]),
        b_K=_stack(parts["bK"]),
        b_V=_stack(parts["bV"]),
        b_O=_stack(out_biases),
        kv_head=torch.arange(cfg.n_heads) // group,
        norm_folded=pre_norm,
    )


def folded_unembedding(adapter: Adapter, fold_norm: bool = True) -> torch.Tensor:
    """`W_U [d_model, d_vocab]` with the final norm's scale (and LayerNorm's centring) folded in, so
    logits are `(x / scale(x)) W_U` plus a constant; plain `W_U` when `fold_norm` is False."""
    unembedding = adapter.unembedding_weight()
    if unembedding is None:
        raise InputError(f"{adapter.config().model_type} model has no unembedding (no LM head)")
    weight = unembedding.detach().float()
    final = adapter.final_sites().get("ln_final.hook_normalized")
    if not fold_norm or not isinstance(final, ModuleOutput):
        return weight
    folded, _ = fold_reader(norm_affine(adapter, final.path), weight, None)
    return folded


def _rotary_module(adapter: Adapter) -> nn.Module:
    found = [m for name, m in adapter.hf_model.named_modules() if name.endswith("rotary_emb")]
    if not found:
        raise InputError(f"{adapter.config().model_type} has no rotary embedding (positions are learned)")
    return found[0]


def _rotation_at(adapter: Adapter, position: int, layer: int) -> torch.Tensor:
    """`[d_head, d_head]`: the map HF's rotary embedding applies to a row vector `q` at `position`
    (`q cos + rotate_half(q) sin` on the first `rotary_dim` entries, the rest unchanged)."""
    module, cfg = _rotary_module(adapter), adapter.config()
    device = next(adapter.hf_model.parameters()).device
    probe = torch.zeros(1, 1, cfg.d_head, device=device)
    extra = {}
    if "layer_type" in inspect.signature(module.forward).parameters:  # Gemma 3: local and global rotary
        extra["layer_type"] = adapter.hf_config.get_text_config().layer_types[layer]
    cos, sin = module(probe, torch.tensor([[position]], device=probe.device), **extra)
    cos, sin = cos[0, 0].float().cpu(), sin[0, 0].float().cpu()  # [rotary_dim]
    rotary, half = cos.shape[0], cos.shape[0] // 2
    swap = torch.zeros(rotary, rotary)  # rotate_half as a matrix on row vectors: (x1, x2) -> (-x2, x1)
    swap[half:, :half] = -torch.eye(half)
    swap[:half, half:] = torch.eye(half)
    matrix = torch.eye(cfg.d_head)
    matrix[:rotary, :rotary] = torch.diag(cos) + swap * sin
    return matrix


def rotary_matrix(adapter: Adapter, offset: int, layer: int = 0) -> torch.Tensor:
    """`R [d_head, d_head]` with score(query i, key j) `= q_i R k_jᵀ / sqrt(d_head)` whenever
    `i − j = offset` (`q`, `k` as in `hook_q`/`hook_k`, before rotation), read from the model's own
    rotary module; `W_Q R W_Kᵀ` is then the QK circuit for keys `offset` positions back. `layer`
    matters only where layers rotate differently (Gemma 3's local and global layers)."""
    with torch.no_grad():
        return _rotation_at(adapter, offset, layer) @ _rotation_at(adapter, 0, layer).T
