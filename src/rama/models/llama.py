"""Llama family: Llama, Mistral, Qwen2/3, SmolLM2 — pre-norm blocks, gated MLP, rotary positions.

`hook_q` / `hook_k` are the projections before rotary embedding (and before Qwen3's q/k norms);
`hook_k` / `hook_v` have the model's own key/value head count.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from rama.models.adapter import Adapter, BlockPaths, standard_config
from rama.models.config import ModelConfig
from rama.models.spec import Heads, ModuleInput, ModuleOutput, SiteSpec


class LlamaAdapter(Adapter):
    name = "llama"
    model_types = ("llama", "mistral", "qwen2", "qwen3")
    layers_paths: ClassVar[tuple[str, ...]] = ("model.layers", "layers")

    def config(self) -> ModelConfig:
        return standard_config(self, gated_mlp=True)

    def block_paths(self) -> BlockPaths:
        cfg = self.config()
        q_heads = Heads(cfg.n_heads, cfg.d_head)
        kv_heads = Heads(cfg.n_kv_heads, cfg.d_head)
        return BlockPaths(
            ln1="input_layernorm",
            q=ModuleOutput("self_attn.q_proj", q_heads),
            k=ModuleOutput("self_attn.k_proj", kv_heads),
            v=ModuleOutput("self_attn.v_proj", kv_heads),
            attention="self_attn",
            out_proj="self_attn.o_proj",
            attn_out=ModuleOutput("self_attn"),
            ln2="post_attention_layernorm",
            mlp_pre=ModuleOutput("mlp.gate_proj"),
            mlp_pre_linear=ModuleOutput("mlp.up_proj"),
            mlp_post=ModuleInput("mlp.down_proj", keyword="input"),
            mlp_out=ModuleOutput("mlp"),
        )

    def embedding_sites(self) -> dict[str, SiteSpec]:
        return {"hook_embed": ModuleOutput(self.under_base("embed_tokens"))}

    def final_sites(self) -> dict[str, SiteSpec]:
        sites: dict[str, SiteSpec] = {"ln_final.hook_normalized": ModuleOutput(self.under_base("norm"))}
        if getattr(self.hf_model, "lm_head", None) is not None:
            sites["hook_logits"] = ModuleOutput("lm_head")
        return sites

    def embedding_weight(self) -> torch.Tensor:
        return self.weight_of(self.under_base("embed_tokens"))
