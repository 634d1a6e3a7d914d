"""The shape facts a user needs about a model, under TransformerLens's names."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    architecture: str  # adapter name, e.g. "llama"
    model_type: str  # Hugging Face `config.model_type`
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    is_causal: bool = True
    parallel_attn_mlp: bool = False
    positional: str = "rotary"  # "rotary" | "learned"
    normalization: str = "RMS"  # "RMS" | "LN"
    gated_mlp: bool = False
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
