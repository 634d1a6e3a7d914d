"""GPT-NeoX (Pythia): q|k|v interleaved per head, partial rotary, usually parallel attention and MLP.

With `use_parallel_residual` (Pythia's default) both sublayers read `resid_pre` and
`resid_post = resid_pre + attn_out + mlp_out`. `hook_resid_mid` is then defined as
`resid_pre + attn_out`: nothing in the model reads it, and writing it changes `resid_post` through
the attention output only (the MLP still sees `ln2(resid_pre)`).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from rama.models.adapter import Adapter, BlockPaths, standard_config
from rama.models.config import ModelConfig
from rama.models.spec import InterleavedHeads, ModuleInput, ModuleOutput, SiteSpec


class NeoXAdapter(Adapter):
    name = "neox"
    model_types = ("gpt_neox",)
    layers_paths: ClassVar[tuple[str, ...]] = ("gpt_neox.layers", "layers")

    def config(self) -> ModelConfig:
        parallel = bool(self.hf_config.use_parallel_residual)
        return standard_config(self, parallel_attn_mlp=parallel, normalization="LN")

    def block_paths(self) -> BlockPaths:
        cfg = self.config()
        h, dh = cfg.n_heads, cfg.d_head
        return BlockPaths(
            ln1="input_layernorm",
            q=ModuleOutput("attention.query_key_value", InterleavedHeads(0, 3, h, dh)),
            k=ModuleOutput("attention.query_key_value", InterleavedHeads(1, 3, h, dh)),
            v=ModuleOutput("attention.query_key_value", InterleavedHeads(2, 3, h, dh)),
            attention="attention",
            out_proj="attention.dense",
            attn_out=ModuleOutput("post_attention_dropout"),
            ln2="post_attention_layernorm",
            mlp_pre=ModuleOutput("mlp.dense_h_to_4h"),
            mlp_post=ModuleInput("mlp.dense_4h_to_h", keyword="input"),
            mlp_out=ModuleOutput("post_mlp_dropout"),
        )

    def embedding_sites(self) -> dict[str, SiteSpec]:
        return {"hook_embed": ModuleOutput(self.under_base("embed_in"))}

    def final_sites(self) -> dict[str, SiteSpec]:
        sites: dict[str, SiteSpec] = {
            "ln_final.hook_normalized": ModuleOutput(self.under_base("final_layer_norm"))
        }
        if getattr(self.hf_model, "embed_out", None) is not None:
            sites["hook_logits"] = ModuleOutput("embed_out")
        return sites

    def embedding_weight(self) -> torch.Tensor:
        return self.weight_of(self.under_base("embed_in"))
