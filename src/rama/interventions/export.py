"""Steering baked into the weights: an additive steering vector becomes a bias the architecture
already knows, so the steered model is an ordinary Hugging Face folder that runs without rama.

`x + α·v` at `blocks.L.hook_resid_post` (or `hook_mlp_out`) is the MLP's output bias of block L;
at `blocks.L.hook_resid_pre` it is block L−1's; at `hook_attn_out`, the attention output projection's
bias. Llama models (SmolLM2 among them) have no such biases, so their config gains `mlp_bias` / `attention_bias`
(standard Llama options) with zeros everywhere but the steered block. Architectures whose sublayer
outputs pass through a norm before the residual stream (Gemma 2/3) cannot fold a vector into a bias:
that is an error, not an approximation.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from rama.atomic import check_empty_output, remove_stale_staging, staged_folder
from rama.errors import ConfigError
from rama.hooks.model import HookedModel
from rama.interventions.steering import check_strength, check_vector

_SITE = re.compile(r"^blocks\.(\d+)\.(hook_resid_post|hook_resid_pre|hook_mlp_out|hook_attn_out)$")
# model_type -> (MLP output projection, attention output projection) under each block
_PROJECTIONS = {
    "llama": ("mlp.down_proj", "self_attn.o_proj"),  # biases switched on through mlp_bias / attention_bias
    "gpt2": ("mlp.c_proj", "attn.c_proj"),
    "gpt_neox": ("mlp.dense_4h_to_h", "attention.dense"),
}


def bias_target(model: HookedModel, site: str) -> tuple[int, str]:
    """(block index, projection path inside the block) whose bias carries a vector added at `site`."""
    match = _SITE.match(site)
    model_type = model.cfg.model_type
    if model_type not in _PROJECTIONS:
        raise ConfigError(
            f"steering export folds the vector into a bias; {model_type!r} has no bias that adds straight "
            f"into the residual stream (supported: {', '.join(sorted(_PROJECTIONS))})"
        )
    if match is None:
        raise ConfigError(
            f"only an additive vector at blocks.L.hook_resid_post, hook_resid_pre, hook_mlp_out or hook_attn_out "
            f"can be exported as weights; got {site!r}"
        )
    layer, kind = int(match.group(1)), match.group(2)
    mlp, attention = _PROJECTIONS[model_type]
    if kind == "hook_resid_pre":
        if layer == 0:
            raise ConfigError("blocks.0.hook_resid_pre precedes every bias; steer hook_embed in rama instead")
        return layer - 1, mlp
    if kind == "hook_attn_out":
        return layer, attention
    return layer, mlp


def check_export_target(out: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Refuse an output folder that already holds files unless `overwrite` (before any work), and
    remove the staging folders (`.<name>.*` beside it) that a killed export left behind."""
    final = Path(out)
    if final.is_file() or not overwrite:
        check_empty_output(final)
    remove_stale_staging(final)
    return final


def export_steered(
    model: HookedModel,
    site: str,
    vector: torch.Tensor,
    strength: float,
    out: str | os.PathLike[str],
    overwrite: bool = False,
) -> Path:
    """Write the model steered by `strength · vector` at `site` (every position) as an HF folder."""
    layer, projection = bias_target(model, site)
    v = check_vector(model, site, vector) * check_strength("strength", strength)
    check_export_target(out, overwrite)
    with staged_folder(out, overwrite) as staging:
        steered = _with_bias(model, layer, projection, v)
        steered.save_pretrained(staging)
        model.tokenizer.save_pretrained(staging)
    return Path(out)


def _with_bias(model: HookedModel, layer: int, projection: str, v: torch.Tensor) -> Any:
    """A copy of the HF model whose `projection` in block `layer` adds `v`."""
    from transformers import AutoModelForCausalLM

    config = model.hf.config.__class__.from_dict(model.hf.config.to_dict())
    if model.cfg.model_type == "llama":  # no output biases: switch on the standard options
        config.mlp_bias = config.mlp_bias or projection.startswith("mlp")
        config.attention_bias = getattr(config, "attention_bias", False) or projection.startswith("self_attn")
    steered: Any = AutoModelForCausalLM.from_config(config, torch_dtype=next(model.hf.parameters()).dtype)
    missing, unexpected = steered.load_state_dict(model.hf.state_dict(), strict=False)
    if unexpected or any(not name.endswith("bias") for name in missing):
        raise RuntimeError(f"could not copy the weights: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        for name in missing:  # new biases start at zero
            steered.get_parameter(name).zero_()
        module = steered.get_submodule(f"{model.adapter.block_path(layer)}.{projection}")
        module.bias.add_(v.to(module.bias.dtype))
    steered.eval()
    return steered
