"""GPT-2: pre-LN blocks, learned positions, fused q|k|v projection stored as Conv1D ([d_in, d_out])."""

from __future__ import annotations

from typing import ClassVar

import torch

from rama.models.adapter import Adapter, BlockPaths, hf_n_ctx
from rama.models.config import ModelConfig
from rama.models.spec import FusedSlice, ModuleInput, ModuleOutput, SiteSpec


class GPT2Adapter(Adapter):
    name = "gpt2"
    model_types = ("gpt2",)
    layers_paths: ClassVar[tuple[str, ...]] = ("transformer.h", "h")

    def config(self) -> ModelConfig:
        c = self.hf_config
        return ModelConfig(
            architecture=self.name,
            model_type=c.model_type,
            n_layers=c.n_layer,
            d_model=c.n_embd,
            n_heads=c.n_head,
            n_kv_heads=c.n_head,
            d_head=c.n_embd // c.n_head,
            d_mlp=c.n_inner or 4 * c.n_embd,
            d_vocab=c.vocab_size,
            n_ctx=hf_n_ctx(c),
            positional="learned",
            normalization="LN",
            name=getattr(c, "name_or_path", "") or "",
        )

    def block_paths(self) -> BlockPaths:
        cfg = self.config()
        d, h, dh = cfg.d_model, cfg.n_heads, cfg.d_head
        return BlockPaths(
            ln1="ln_1",
            q=ModuleOutput("attn.c_attn", FusedSlice(0, d, h, dh)),
            k=ModuleOutput("attn.c_attn", FusedSlice(d, 2 * d, h, dh)),
            v=ModuleOutput("attn.c_attn", FusedSlice(2 * d, 3 * d, h, dh)),
            attention="attn",
            out_proj="attn.c_proj",
            out_proj_transposed=True,
            attn_out=ModuleOutput("attn"),
            ln2="ln_2",
            mlp_pre=ModuleOutput("mlp.c_fc"),
            mlp_post=ModuleInput("mlp.c_proj", keyword="x"),
            mlp_out=ModuleOutput("mlp"),
        )

    def embedding_sites(self) -> dict[str, SiteSpec]:
        return {
            "hook_embed": ModuleOutput(self.under_base("wte")),
            "hook_pos_embed": ModuleOutput(self.under_base("wpe")),
        }

    def final_sites(self) -> dict[str, SiteSpec]:
        sites: dict[str, SiteSpec] = {"ln_final.hook_normalized": ModuleOutput(self.under_base("ln_f"))}
        if getattr(self.hf_model, "lm_head", None) is not None:
            sites["hook_logits"] = ModuleOutput("lm_head")
        return sites

    def embedding_weight(self) -> torch.Tensor:
        return self.weight_of(self.under_base("wte"))
