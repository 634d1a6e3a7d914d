"""Gemma, Gemma 2 and Gemma 3 (text and the text tower of the multimodal model).

Where the sites sit, given Gemma's extra norms:
- `hook_embed` is the embedding *after* Gemma's sqrt(d_model) scaling (HF scales inside the module).
- Gemma 1 blocks are Llama-shaped. Gemma 2/3 wrap both sublayers in norms:
  `ln1` = `input_layernorm`, `hook_attn_out` = output of `post_attention_layernorm` (what is added to
  the residual), `ln2` = `pre_feedforward_layernorm`, `hook_mlp_out` = output of
  `post_feedforward_layernorm`. `hook_result` summed over heads plus bias equals the output of
  `o_proj`, i.e. the input of `post_attention_layernorm`, not `hook_attn_out`.
- `hook_attn_scores` include Gemma 2's logit soft-capping (applied before the mask, as HF does).
"""

from __future__ import annotations

from typing import Any, ClassVar

from rama.models.adapter import BlockPaths
from rama.models.config import ModelConfig
from rama.models.llama import LlamaAdapter
from rama.models.spec import ModuleOutput


class GemmaAdapter(LlamaAdapter):
    name = "gemma"
    model_types = ("gemma", "gemma2", "gemma3", "gemma3_text")
    layers_paths: ClassVar[tuple[str, ...]] = (
        "model.language_model.layers",
        "model.layers",
        "language_model.layers",
        "layers",
    )

    def __init__(self, hf_model: Any) -> None:
        super().__init__(hf_model)
        self.text_config: Any = self.hf_config.get_text_config()

    def config(self) -> ModelConfig:
        base_config, self.hf_config = self.hf_config, self.text_config
        try:
            cfg = super().config()
        finally:
            self.hf_config = base_config
        return cfg

    @property
    def has_sandwich_norms(self) -> bool:
        return self.text_config.model_type != "gemma"

    def block_paths(self) -> BlockPaths:
        paths = super().block_paths()
        if not self.has_sandwich_norms:
            return paths
        return BlockPaths(
            **{
                **paths.__dict__,
                "attn_out": ModuleOutput("post_attention_layernorm"),
                "ln2": "pre_feedforward_layernorm",
                "mlp_out": ModuleOutput("post_feedforward_layernorm"),
            }
        )
