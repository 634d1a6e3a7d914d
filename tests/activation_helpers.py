"""A tiny causal LM that reads SmolLM2's tokenizer, and small text corpora: fast real harvests."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
import transformers as tf

from tiny_models import CONFIGS

TEXT = (
    "the ship sailed over a calm sea while gulls cried above harbour lights and old sailors told "
    "stories of storms music drifted from a tavern where children laughed at the fiddler's song"
)
WORDS = TEXT.split()


def tiny_lm(tokenizer: Any, seed: int = 0, name: str = "tiny-llama") -> Any:
    """A 2-layer, 32-wide Llama over SmolLM2's vocabulary (random weights from `seed`)."""
    from rama.hooks.model import HookedModel

    torch.manual_seed(seed)
    config = CONFIGS["llama"]()  # tests/tiny_models.py's tiny Llama, over SmolLM2's vocabulary
    config.vocab_size = len(tokenizer)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    model = tf.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    return HookedModel(model, tokenizer, name=name)


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))) + "." for _ in range(count)]


def jsonl_corpus(path: Path, documents: int, seed: int = 0) -> Path:
    """`documents` short documents of seeded word salad, one JSON line each."""
    lines = (json.dumps({"text": " ".join(sentences(4, seed * 10_000 + i))}) for i in range(documents))
    path.write_text("\n".join(lines) + "\n")
    return path
