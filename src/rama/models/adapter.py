"""The base every architecture adapter fills in: paths to real HF modules, nothing re-implemented."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from rama.errors import InputError
from rama.models.config import ModelConfig
from rama.models.sites import block_prefix
from rama.models.spec import (
    AttentionProbe,
    HeadResult,
    Heads,
    ModuleInput,
    ModuleOutput,
    ResidualSum,
    SiteSpec,
)


@dataclass(frozen=True)
class BlockPaths:
    """Module paths inside one block, relative to the block itself."""

    ln1: str | None
    q: ModuleOutput
    k: ModuleOutput
    v: ModuleOutput
    attention: str  # the module whose attention function computes scores and pattern
    out_proj: str  # its input is `hook_z`
    attn_out: ModuleOutput  # exactly what is added to the residual stream
    ln2: str | None
    mlp_pre: ModuleOutput
    mlp_post: ModuleInput | ModuleOutput
    mlp_out: ModuleOutput
    mlp_pre_linear: ModuleOutput | None = None  # gated MLPs: the linear (up) branch
    resid_mid: ModuleInput | None = None  # post-LN blocks read resid_mid as an input; else derived
    out_proj_transposed: bool = False


def _prefixed(spec: Any, prefix: str) -> Any:
    """The same spec with `prefix.` put before its path."""
    return type(spec)(**{**spec.__dict__, "path": f"{prefix}.{spec.path}"})


class Adapter(ABC):
    """Describes one architecture family. Subclasses set the paths; sites follow from them."""

    name: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    layers_paths: ClassVar[tuple[str, ...]]  # candidates, e.g. ("model.layers", "layers")

    def __init__(self, hf_model: nn.Module) -> None:
        self.hf_model = hf_model
        self.hf_config: Any = getattr(hf_model, "config", None)
        self.layers_path = self._find_layers_path()
        self.prefix = self.layers_path.rsplit(".", 1)[0] if "." in self.layers_path else ""

    def _find_layers_path(self) -> str:
        names = dict(self.hf_model.named_modules())
        for path in self.layers_paths:
            if path in names:
                return path
        raise InputError(
            f"{type(self.hf_model).__name__} has none of the block lists {self.layers_paths} "
            f"that the {self.name!r} adapter expects"
        )

    def under_base(self, path: str) -> str:
        """A path relative to the base model (the module holding the block list)."""
        return f"{self.prefix}.{path}" if self.prefix else path

    @property
    def n_layers(self) -> int:
        layers = self.hf_model.get_submodule(self.layers_path)
        assert isinstance(layers, nn.ModuleList)
        return len(layers)

    @abstractmethod
    def config(self) -> ModelConfig: ...

    @abstractmethod
    def block_paths(self) -> BlockPaths: ...

    @abstractmethod
    def embedding_sites(self) -> dict[str, SiteSpec]: ...

    @abstractmethod
    def final_sites(self) -> dict[str, SiteSpec]: ...

    @abstractmethod
    def embedding_weight(self) -> torch.Tensor:
        """`W_E`, `[d_vocab, d_model]`."""

    def unembedding_weight(self) -> torch.Tensor | None:
        """`W_U`, `[d_model, d_vocab]`, or None for a model without an LM head."""
        head = getattr(self.hf_model, "get_output_embeddings", lambda: None)()
        return None if head is None else head.weight.T

    def block_sites(self, layer: int) -> dict[str, SiteSpec]:
        """Every site of block `layer`, in the order the forward pass reaches them."""
        block = f"{self.layers_path}.{layer}"
        p = self.block_paths()
        cfg = self.config()
        at = block_prefix(layer)

        def rel(spec: Any) -> Any:
            return _prefixed(spec, block)

        sites: dict[str, SiteSpec] = {at + "hook_resid_pre": ModuleInput(block)}
        if p.ln1 is not None and p.resid_mid is None:
            sites[at + "ln1.hook_normalized"] = ModuleOutput(f"{block}.{p.ln1}")
        sites[at + "attn.hook_q"] = rel(p.q)
        sites[at + "attn.hook_k"] = rel(p.k)
        sites[at + "attn.hook_v"] = rel(p.v)
        sites[at + "attn.hook_attn_scores"] = AttentionProbe(f"{block}.{p.attention}", "scores")
        sites[at + "attn.hook_pattern"] = AttentionProbe(f"{block}.{p.attention}", "pattern")
        sites[at + "attn.hook_z"] = ModuleInput(f"{block}.{p.out_proj}", view=_heads(cfg))
        sites[at + "attn.hook_result"] = HeadResult(
            f"{block}.{p.out_proj}", cfg.n_heads, cfg.d_head, p.out_proj_transposed
        )
        sites[at + "hook_attn_out"] = rel(p.attn_out)
        if p.resid_mid is None:
            sites[at + "hook_resid_mid"] = ResidualSum(block, rel(p.attn_out))
        else:
            sites[at + "hook_resid_mid"] = rel(p.resid_mid)
            if p.ln1 is not None:
                sites[at + "ln1.hook_normalized"] = ModuleOutput(f"{block}.{p.ln1}")
        if p.ln2 is not None and p.resid_mid is None:
            sites[at + "ln2.hook_normalized"] = ModuleOutput(f"{block}.{p.ln2}")
        sites[at + "mlp.hook_pre"] = rel(p.mlp_pre)
        if p.mlp_pre_linear is not None:
            sites[at + "mlp.hook_pre_linear"] = rel(p.mlp_pre_linear)
        sites[at + "mlp.hook_post"] = rel(p.mlp_post)
        sites[at + "hook_mlp_out"] = rel(p.mlp_out)
        if p.ln2 is not None and p.resid_mid is not None:
            sites[at + "ln2.hook_normalized"] = ModuleOutput(f"{block}.{p.ln2}")
        sites[at + "hook_resid_post"] = ModuleOutput(block)
        return sites

    def sites(self) -> dict[str, SiteSpec]:
        """Every site of the model, in forward order."""
        out = dict(self.embedding_sites())
        for layer in range(self.n_layers):
            out.update(self.block_sites(layer))
        out.update(self.final_sites())
        return out

    def weight_of(self, path: str) -> torch.Tensor:
        weight = getattr(self.hf_model.get_submodule(path), "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise TypeError(f"{path} has no weight tensor")
        return weight

    def block_path(self, layer: int) -> str:
        return f"{self.layers_path}.{layer}"


def _heads(cfg: ModelConfig) -> Heads:
    return Heads(cfg.n_heads, cfg.d_head)


def standard_config(adapter: Adapter, **overrides: Any) -> ModelConfig:
    """A `ModelConfig` from the field names most HF configs share; `overrides` for the rest."""
    c = adapter.hf_config
    n_heads = c.num_attention_heads
    fields: dict[str, Any] = {
        "architecture": adapter.name,
        "model_type": c.model_type,
        "n_layers": c.num_hidden_layers,
        "d_model": c.hidden_size,
        "n_heads": n_heads,
        "n_kv_heads": getattr(c, "num_key_value_heads", None) or n_heads,
        "d_head": getattr(c, "head_dim", None) or c.hidden_size // n_heads,
        "d_mlp": c.intermediate_size,
        "d_vocab": c.vocab_size,
        "n_ctx": hf_n_ctx(c),
        "name": getattr(c, "name_or_path", "") or "",
    }
    return ModelConfig(**{**fields, **overrides})


def hf_n_ctx(hf_config: Any, default: int = 2048) -> int:
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(hf_config, key, None)
        if isinstance(value, int):
            return value
    return default
