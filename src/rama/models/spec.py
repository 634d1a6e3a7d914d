"""Where each hook site lives inside a Hugging Face model.

Adapters describe sites with these small records; `rama.hooks` turns them into PyTorch hooks.
Keeping the description free of hook machinery lets an adapter be a page of paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch


class View(Protocol):
    """Maps the tensor a module produces to the site's tensor and back.

    `put(full, get(full))` must return a tensor bit-identical to `full`.
    """

    def get(self, full: torch.Tensor) -> torch.Tensor: ...

    def put(self, full: torch.Tensor, site: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Heads:
    """`[batch, pos, n_heads * d_head]` <-> `[batch, pos, n_heads, d_head]`."""

    n_heads: int
    d_head: int

    def get(self, full: torch.Tensor) -> torch.Tensor:
        return full.view(*full.shape[:-1], self.n_heads, self.d_head)

    def put(self, full: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        return site.reshape(full.shape)


@dataclass(frozen=True)
class FusedSlice:
    """One of several projections fused on the last axis (GPT-2's `c_attn`: q | k | v)."""

    start: int
    stop: int
    n_heads: int
    d_head: int

    def get(self, full: torch.Tensor) -> torch.Tensor:
        part = full[..., self.start : self.stop]
        return part.reshape(*full.shape[:-1], self.n_heads, self.d_head)

    def put(self, full: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        out = full.clone()
        out[..., self.start : self.stop] = site.reshape(*full.shape[:-1], self.stop - self.start)
        return out


@dataclass(frozen=True)
class InterleavedHeads:
    """Projections interleaved per head (GPT-NeoX's `query_key_value`: per head q | k | v)."""

    index: int
    n_parts: int
    n_heads: int
    d_head: int

    def get(self, full: torch.Tensor) -> torch.Tensor:
        per_head = full.view(*full.shape[:-1], self.n_heads, self.n_parts * self.d_head)
        return per_head[..., self.index * self.d_head : (self.index + 1) * self.d_head]

    def put(self, full: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        out = full.clone()
        per_head = out.view(*full.shape[:-1], self.n_heads, self.n_parts * self.d_head)
        per_head[..., self.index * self.d_head : (self.index + 1) * self.d_head] = site
        return out


@dataclass(frozen=True)
class ModuleOutput:
    """The output of a module (element `index` when the module returns a tuple)."""

    path: str
    view: View | None = None
    index: int = 0


@dataclass(frozen=True)
class ModuleInput:
    """An input of a module: positional argument `position`, or keyword `keyword`."""

    path: str
    keyword: str = "hidden_states"
    position: int = 0
    view: View | None = None


@dataclass(frozen=True)
class ResidualSum:
    """`resid_pre + attn_out`, which HF never stores as a module output.

    Read by summing the block input and the attention output; written by adding the change to the
    attention output, so the value reaches everything downstream exactly as the sum would.
    """

    block_path: str
    attn_out: ModuleOutput


@dataclass(frozen=True)
class AttentionProbe:
    """Pre-softmax scores or post-softmax pattern inside the attention function."""

    attention_path: str
    kind: Literal["scores", "pattern"]


@dataclass(frozen=True)
class HeadResult:
    """Each head's own write to the residual stream, `z[h] @ W_O[h]`: `[batch, pos, head, d_model]`.

    Computed from the input of the output projection only when asked for.
    """

    out_proj_path: str
    n_heads: int
    d_head: int
    weight_is_transposed: bool = False  # GPT-2's Conv1D stores W as [d_in, d_out]


SiteSpec = ModuleOutput | ModuleInput | ResidualSum | AttentionProbe | HeadResult

HEAD_VIEWS = (Heads, FusedSlice, InterleavedHeads)


def head_axis(spec: SiteSpec) -> int | None:
    """The axis of a site's `[batch, ...]` tensor that indexes attention heads, or None.

    2 for per-head vectors (q/k/v and z are `[batch, pos, head, d_head]`, a head result is
    `[batch, pos, head, d_model]`); 1 for attention scores and pattern (`[batch, head, q_pos, k_pos]`,
    HF's layout); None for sites without heads (residual stream, MLP, norms). k and v of a
    grouped-query model have n_kv_heads on that axis, not n_heads.
    """
    if isinstance(spec, AttentionProbe):
        return 1
    if isinstance(spec, HeadResult):
        return 2
    if isinstance(spec, ModuleOutput | ModuleInput) and isinstance(spec.view, HEAD_VIEWS):
        return 2
    return None
