"""BERT-style encoders (BERT, MiniLM): post-LN blocks, bidirectional attention, no final norm.

Sites in a post-LN block, in forward order:
`resid_pre` -> attention -> `hook_attn_out` (dense output) -> `hook_resid_mid` = resid_pre + attn_out
(the input of the attention LayerNorm) -> `ln1.hook_normalized` (its output, which the MLP reads)
-> `mlp.hook_pre` / `mlp.hook_post` -> `hook_mlp_out` -> `ln2.hook_normalized` = `hook_resid_post`
(the block output, `hidden_states[i+1]`). `resid_pre` of block 0 is the embedding output after its
LayerNorm; `hook_embed`, `hook_pos_embed` and `hook_token_type_embed` are the three raw embeddings.
The model's output is the last hidden state, `[batch, pos, d_model]`, unless it has an MLM head.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from rama.models.adapter import Adapter, BlockPaths, standard_config
from rama.models.config import ModelConfig
from rama.models.spec import Heads, ModuleInput, ModuleOutput, SiteSpec


class BertAdapter(Adapter):
    name = "bert"
    model_types = ("bert",)
    layers_paths: ClassVar[tuple[str, ...]] = ("bert.encoder.layer", "encoder.layer")

    def config(self) -> ModelConfig:
        return standard_config(self, is_causal=False, positional="learned", normalization="LN")

    def block_paths(self) -> BlockPaths:
        cfg = self.config()
        heads = Heads(cfg.n_heads, cfg.d_head)
        return BlockPaths(
            ln1="attention.output.LayerNorm",
            q=ModuleOutput("attention.self.query", heads),
            k=ModuleOutput("attention.self.key", heads),
            v=ModuleOutput("attention.self.value", heads),
            attention="attention.self",
            out_proj="attention.output.dense",
            attn_out=ModuleOutput("attention.output.dropout"),
            resid_mid=ModuleInput("attention.output.LayerNorm", keyword="input"),
            ln2="output.LayerNorm",
            mlp_pre=ModuleOutput("intermediate.dense"),
            mlp_post=ModuleOutput("intermediate"),
            mlp_out=ModuleOutput("output.dropout"),
        )

    def _embeddings(self) -> str:
        encoder_parent = self.layers_path.removesuffix("encoder.layer")
        return f"{encoder_parent}embeddings"

    def embedding_sites(self) -> dict[str, SiteSpec]:
        e = self._embeddings()
        return {
            "hook_embed": ModuleOutput(f"{e}.word_embeddings"),
            "hook_pos_embed": ModuleOutput(f"{e}.position_embeddings"),
            "hook_token_type_embed": ModuleOutput(f"{e}.token_type_embeddings"),
        }

    def final_sites(self) -> dict[str, SiteSpec]:
        if getattr(self.hf_model, "cls", None) is not None:
            return {"hook_logits": ModuleOutput("cls")}
        return {}

    def embedding_weight(self) -> torch.Tensor:
        return self.weight_of(f"{self._embeddings()}.word_embeddings")
