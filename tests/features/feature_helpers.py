"""A tiny Llama with a real (word-level) tokenizer and a tiny SAE: fast feature builds end to end."""

from __future__ import annotations

from typing import Any

import torch
import transformers as tf
from tokenizers import Tokenizer, models, pre_tokenizers

from rama.hooks.model import HookedModel
from rama.sae import SAE, SAEConfig, TopKConfig
from sae_helpers import perturbed
from tiny_models import VOCAB, build

SITE = "blocks.1.hook_resid_post"


def word_tokenizer() -> Any:
    """Words w3 … w96 (ids 3 … 96), with <pad> 0, <s> 1, </s> 2 as special tokens."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, VOCAB)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def tiny_model() -> HookedModel:
    return HookedModel(build("llama"), word_tokenizer(), name="tiny-llama")


def tiny_sae(seed: int = 0, site: str = SITE, **extra: Any) -> SAE:
    torch.manual_seed(seed)
    cfg = SAEConfig(d_in=32, d_sae=24, architecture="topk", arch=TopKConfig(k=4), hook_name=site,
                    model_name="tiny-llama", **extra)  # fmt: skip
    return perturbed(cfg)


def token_rows(rows: int = 24, positions: int = 16, seed: int = 0) -> torch.Tensor:
    """Random word ids with a BOS (a special token, left out of the statistics) starting each row."""
    tokens = torch.randint(3, VOCAB, (rows, positions), generator=torch.Generator().manual_seed(seed))
    tokens[:, 0] = 1
    return tokens
