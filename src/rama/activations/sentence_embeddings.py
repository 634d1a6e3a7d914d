"""Sentence embeddings from MiniLM (`rama.load("minilm-l6")`, all-MiniLM-L6-v2): the one text embedder
in rama, used wherever a text must be compared with another by meaning (steering's concept scorer,
feature context coherence, explanation scoring).

An embedding is what sentence-transformers computes for this model: the encoder's last hidden state
mean-pooled over the real (unpadded) tokens, then L2-normalised, so a dot product is a cosine. Texts are
truncated at 256 word pieces (the model's `max_seq_length` in sentence-transformers).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from tqdm import tqdm

from rama.errors import ConfigError, InputError
from rama.hooks.model import HookedModel, load

EMBEDDER_MODEL = "minilm-l6"
EMBEDDER_MAX_TOKENS = 256


class SentenceEmbedder:
    """Texts → `[n, d_model]` unit vectors (float32, on the CPU), batched, without gradients."""

    def __init__(
        self, encoder: HookedModel | None = None, batch_size: int = 64, max_tokens: int = EMBEDDER_MAX_TOKENS
    ) -> None:
        if batch_size < 1 or max_tokens < 2:
            raise ConfigError(f"batch_size must be ≥ 1 and max_tokens ≥ 2, not {batch_size} and {max_tokens}")
        self.encoder = encoder if encoder is not None else load(EMBEDDER_MODEL)
        self.batch_size = batch_size
        self.max_tokens = max_tokens

    @property
    def width(self) -> int:
        return int(self.encoder.cfg.d_model)

    def __call__(self, texts: Sequence[str], progress: bool = False) -> torch.Tensor:
        """One unit vector per text, in the order given (`[n, d_model]`; `[0, d_model]` for none)."""
        if isinstance(texts, str):
            raise InputError("embed a list of texts, not one string: embedder([text])")
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        out = torch.empty(len(texts), self.width)
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc="embedding", unit="batch", disable=not progress or len(starts) < 2):
            chosen = order[start : start + self.batch_size]
            out[chosen] = self.embed_batch([texts[i] for i in chosen])
        return out

    def embed_batch(self, texts: list[str]) -> torch.Tensor:
        """Mean-pooled, normalised embeddings of one batch: `[len(texts), d_model]`."""
        batch = self.encoder.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        mask = batch["attention_mask"]  # [batch, pos]
        with torch.inference_mode():
            hidden = self.encoder(batch["input_ids"], attention_mask=mask).float().cpu()  # [batch, pos, d]
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        return torch.nn.functional.normalize(pooled, dim=-1)


@functools.cache
def sentence_embedder() -> SentenceEmbedder:
    """The process-wide MiniLM embedder, loaded on first use (about 5 s) and kept."""
    return SentenceEmbedder()
