"""The two real built-in models: exact against plain HF, and behaving like the models they are."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import transformers as tf

import rama
from rama.models.loading import models_cache

pytestmark = pytest.mark.slow
PROMPT = "The capital of France is Paris. The capital of Germany is"


def test_smollm_config_matches_the_published_architecture(smollm: Any) -> None:
    c = smollm.cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_head, c.d_mlp, c.d_vocab) == (
        30,
        576,
        9,
        3,
        64,
        1536,
        49152,
    )
    assert smollm.W_E.shape == (49152, 576) and smollm.W_U.shape == (576, 49152)
    assert sum(p.numel() for p in smollm.hf.parameters()) == pytest.approx(134.5e6, rel=0.01)


def test_smollm_logits_and_residuals_equal_plain_hf(smollm: Any) -> None:
    plain = tf.AutoModelForCausalLM.from_pretrained(models_cache() / "smollm2-135m").eval()
    tokens = smollm.to_tokens([PROMPT, "Call me Ishmael. Some years ago"], padding_side="right")[:, :8]
    with torch.no_grad():
        reference = plain(tokens, output_hidden_states=True)
        logits, cache = smollm.run_with_cache(tokens, "blocks.*.hook_resid_post")
    assert torch.equal(logits, reference.logits)
    for i in range(29):
        assert torch.equal(cache[f"blocks.{i}.hook_resid_post"], reference.hidden_states[i + 1])


def test_smollm_patterns_under_sdpa_equal_hf_eager(smollm: Any) -> None:
    eager = tf.AutoModelForCausalLM.from_pretrained(
        models_cache() / "smollm2-135m", attn_implementation="eager"
    ).eval()
    tokens = smollm.to_tokens(PROMPT)
    with torch.no_grad():
        attentions = eager(tokens, output_attentions=True).attentions
        logits, cache = smollm.run_with_cache(tokens, "blocks.*.attn.hook_pattern")
        assert torch.equal(logits, smollm(tokens))  # reading patterns leaves sdpa's logits untouched
    for i in (0, 9, 29):
        torch.testing.assert_close(cache[f"blocks.{i}.attn.hook_pattern"], attentions[i], rtol=0, atol=1e-5)


def test_smollm_completes_berlin(smollm: Any) -> None:
    assert smollm.generate(PROMPT, max_new_tokens=3).startswith(PROMPT + " Berlin")


def test_left_padded_batch_generates_what_each_prompt_generates_alone(smollm: Any) -> None:
    prompts = [PROMPT, "One, two, three,", "Call me Ishmael. Some years ago, never mind how long"]
    together = smollm.generate(prompts, max_new_tokens=6)
    alone = [smollm.generate(p, max_new_tokens=6) for p in prompts]
    assert together == alone


def test_hooks_run_at_every_generated_position(smollm: Any) -> None:
    seen: list[int] = []

    def count(activation: torch.Tensor, hook: Any) -> None:
        seen.append(activation.shape[1])

    prompt_length = smollm.to_tokens(PROMPT).shape[1]
    smollm.generate(PROMPT, max_new_tokens=4, fwd_hooks=[("blocks.3.hook_resid_post", count)])
    assert seen == [prompt_length, 1, 1, 1]  # the prompt, then one position per new token (KV cache)


def test_steering_hook_changes_generation_and_is_removed_afterwards(smollm: Any) -> None:
    direction = smollm.W_E[smollm.to_tokens(" Paris")[0, -1]]

    def add_paris(activation: torch.Tensor, hook: Any) -> torch.Tensor:
        return activation + 8 * direction

    steered = smollm.generate(PROMPT, max_new_tokens=5, fwd_hooks=[("blocks.2.hook_resid_post", add_paris)])
    assert steered != smollm.generate(PROMPT, max_new_tokens=5)
    assert not any(m._forward_hooks for m in smollm.hf.modules())


def test_minilm_hidden_states_patterns_and_embeddings(minilm: Any) -> None:
    plain = tf.AutoModel.from_pretrained(models_cache() / "minilm-l6", attn_implementation="eager").eval()
    sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell today."]
    batch = minilm.tokenize(sentences)
    assert batch.attention_mask is not None
    with torch.no_grad():
        reference = plain(
            batch.tokens,
            attention_mask=batch.attention_mask,
            output_attentions=True,
            output_hidden_states=True,
        )
        output, cache = minilm.run_with_cache(
            sentences, ["blocks.*.hook_resid_post", "blocks.*.attn.hook_pattern"]
        )
    torch.testing.assert_close(output, reference.last_hidden_state, rtol=0, atol=1e-5)
    for i in range(6):
        torch.testing.assert_close(
            cache[f"blocks.{i}.hook_resid_post"], reference.hidden_states[i + 1], rtol=0, atol=1e-5
        )
        torch.testing.assert_close(
            cache[f"blocks.{i}.attn.hook_pattern"], reference.attentions[i], rtol=0, atol=1e-5
        )
    mask = cache.attention_mask.unsqueeze(-1).float()
    embedding = torch.nn.functional.normalize((output * mask).sum(1) / mask.sum(1), dim=-1)
    similarity = embedding @ embedding.T
    assert similarity[0, 1] > 0.5 > similarity[0, 2]


def test_builtin_cache_is_reused(smollm: Any) -> None:
    folder = models_cache() / "smollm2-135m"
    before = (folder / "model.safetensors").stat().st_mtime
    rama.load("smollm2-135m")
    assert (folder / "model.safetensors").stat().st_mtime == before
