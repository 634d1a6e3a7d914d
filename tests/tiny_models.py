"""Tiny randomly initialised HF models, one per supported architecture, built from configs offline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import transformers as tf

VOCAB = 97


def _common(**extra: Any) -> dict[str, Any]:
    return {"vocab_size": VOCAB, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, **extra}


CONFIGS: dict[str, Callable[[], Any]] = {
    "gpt2": lambda: tf.GPT2Config(**_common(n_embd=32, n_layer=2, n_head=4, n_positions=64)),
    "gpt_neox": lambda: tf.GPTNeoXConfig(
        **_common(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            rotary_pct=0.5,
        )
    ),
    "gpt_neox_serial": lambda: tf.GPTNeoXConfig(
        **_common(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            use_parallel_residual=False,
        )
    ),
    "llama": lambda: tf.LlamaConfig(
        **_common(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ),
    "mistral": lambda: tf.MistralConfig(
        **_common(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
            sliding_window=4,
        )
    ),
    "qwen2": lambda: tf.Qwen2Config(
        **_common(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ),
    "gemma": lambda: tf.GemmaConfig(
        **_common(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=8,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ),
    "gemma2": lambda: tf.Gemma2Config(
        **_common(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            intermediate_size=64,
            max_position_embeddings=64,
            sliding_window=4,
            attn_logit_softcapping=5.0,
        )
    ),
    "gemma3_text": lambda: tf.Gemma3TextConfig(
        **_common(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=8,
            intermediate_size=64,
            max_position_embeddings=64,
            sliding_window=4,
        )
    ),
    "bert": lambda: tf.BertConfig(
        **_common(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ),
}

ARCHITECTURES = list(CONFIGS)
SDPA_UNSUPPORTED = {"gemma2"}


def build(arch: str, attn_implementation: str = "sdpa", seed: int = 0) -> Any:
    """A tiny model in eval mode; causal LMs get their LM head, BERT is the bare encoder."""
    torch.manual_seed(seed)
    if arch in SDPA_UNSUPPORTED:
        attn_implementation = "eager"
    config = CONFIGS[arch]()
    config._attn_implementation = attn_implementation
    if arch == "bert":
        model = tf.BertModel(config)
    else:
        model = tf.AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    _randomize_norms(model)
    return model.eval()


def _randomize_norms(model: Any) -> None:
    """Random init leaves norm weights at 1 and biases at 0, which would hide a misplaced site."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name.lower() or name.endswith("bias"):
                param.add_(0.1 * torch.randn(param.shape, generator=generator))


class NoTokenizer:
    """Token-tensor inputs need no tokenizer; these ids are all HookedModel reads from one."""

    pad_token_id = 0
    eos_token_id = 2
    bos_token_id = 1


def hooked(arch: str, attn_implementation: str = "sdpa") -> tuple[Any, Any]:
    """(HF model, HookedModel) for a tiny architecture."""
    from rama.hooks.model import HookedModel

    hf = build(arch, attn_implementation=attn_implementation)
    return hf, HookedModel(hf, NoTokenizer())


def random_tokens(batch: int = 2, pos: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, pos), generator=torch.Generator().manual_seed(seed))
