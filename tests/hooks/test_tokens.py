"""Tokenisation: HF's own behaviour by default, explicit BOS and padding, clear length errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from rama.hooks import ContextTooLongError

pytestmark = pytest.mark.slow


def test_default_tokens_are_exactly_the_hf_tokenizers(smollm: Any) -> None:
    text = "Mr. Darcy walked in."
    assert smollm.to_tokens(text)[0].tolist() == smollm.tokenizer(text)["input_ids"]
    assert smollm.to_str_tokens("Hello world") == ["Hello", " world"]
    assert smollm.to_string(smollm.to_tokens(text)[0]) == text


def test_prepend_bos_adds_it_once(smollm: Any) -> None:
    bos = smollm.tokenizer.bos_token_id
    with_bos = smollm.to_tokens("Hello", prepend_bos=True)[0].tolist()
    assert with_bos[0] == bos and with_bos[1:] == smollm.to_tokens("Hello")[0].tolist()
    assert smollm.to_tokens(smollm.tokenizer.bos_token + "Hello", prepend_bos=True)[0].tolist() == with_bos


def test_padded_batch_matches_each_text_alone(smollm: Any) -> None:
    texts = ["The quick brown fox jumps over the lazy dog.", "Hi"]
    batch = smollm.tokenize(texts)
    assert batch.attention_mask is not None and batch.attention_mask.sum(1).tolist() == [10, 1]
    with torch.no_grad():
        logits, cache = smollm.run_with_cache(texts, "blocks.5.hook_resid_post")
        alone = smollm("Hi")
    assert torch.equal(cache.attention_mask, batch.attention_mask)
    torch.testing.assert_close(logits[1, :1], alone[0], rtol=0, atol=1e-4)


def test_left_padding_puts_pads_first(smollm: Any) -> None:
    batch = smollm.tokenize(["a b c d", "a"], padding_side="left")
    assert batch.attention_mask is not None
    assert batch.attention_mask[1].tolist()[-1] == 1 and batch.attention_mask[1].tolist()[0] == 0


def test_text_longer_than_the_context_is_refused(minilm: Any) -> None:
    with pytest.raises(ContextTooLongError, match=r"the model's context is 512 tokens"):
        minilm(" word" * 600)
