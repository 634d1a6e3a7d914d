"""Head weights reproduce the real attention layer: q/k/v, attention scores (rotary applied with
HF's own function), `hook_z`, `hook_result` and the attention output of tiny real HF models, grouped
query attention included, with and without the pre-attention norm folded in."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from rama.circuits.weight_circuits import qk_circuit
from rama.errors import InputError
from rama.hooks.model import HookedModel
from rama.models.head_weights import folded_unembedding, head_weights, linear_matrix, rotary_matrix
from tiny_models import ARCHITECTURES, hooked, random_tokens

SANDWICH = {"gemma2", "gemma3_text"}  # attn_out is normalised again after o_proj


def norm_scale(module: Any, x: torch.Tensor, layer_norm: bool) -> torch.Tensor:
    """`[..., 1]`: the per-token divisor of a norm (std for LayerNorm, rms for RMSNorm)."""
    eps = getattr(module, "variance_epsilon", None) or getattr(module, "eps", 1e-6)
    if layer_norm:
        return torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
    return torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def reader_input(model: HookedModel, cache: Any, layer: int, folded: bool) -> torch.Tensor:
    """`[batch, pos, d_model]`: what the weights read: ln1's output, or resid_pre over its norm scale."""
    paths = model.adapter.block_paths()
    resid = cache[f"blocks.{layer}.hook_resid_pre"]
    if paths.resid_mid is not None:  # post-LN: attention reads the residual itself
        return resid
    if not folded:
        return cache[f"blocks.{layer}.ln1.hook_normalized"]
    ln = model.hf.get_submodule(f"{model.adapter.block_path(layer)}.{paths.ln1}")
    return resid / norm_scale(ln, resid, model.cfg.normalization == "LN")


def project(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`[batch, pos, head, d_head]` from `x [batch, pos, d_model]` and `weight [head, d_model, d_head]`."""
    out = torch.einsum("bpd,hde->bphe", x, weight)
    return out if bias is None else out + bias


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_weights_reproduce_every_attention_site(arch: str) -> None:
    _, model = hooked(arch, attn_implementation="eager")
    _, cache = model.run_with_cache(random_tokens())
    for fold in (False, True):
        check_sites(model, cache, arch, fold)


def check_sites(model: HookedModel, cache: Any, arch: str, fold: bool) -> None:
    w = head_weights(model.adapter, fold_norm=fold)
    cfg = model.cfg
    assert w.W_Q.shape == (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head)
    assert w.W_K.shape == w.W_V.shape == (cfg.n_layers, cfg.n_kv_heads, cfg.d_model, cfg.d_head)
    assert w.W_O.shape == (cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model)
    for layer in range(cfg.n_layers):
        x = reader_input(model, cache, layer, w.norm_folded)
        at = f"blocks.{layer}."
        for name, weight, bias in (("q", w.W_Q, w.b_Q), ("k", w.W_K, w.b_K), ("v", w.W_V, w.b_V)):
            mine = project(x, weight[layer], None if bias is None else bias[layer])
            torch.testing.assert_close(mine, cache[at + f"attn.hook_{name}"], atol=2e-6, rtol=1e-5)
        v = cache[at + "attn.hook_v"][:, :, w.kv_head]  # [batch, key, head, d_head]: each query head's kv
        z = torch.einsum("bhqk,bkhe->bqhe", cache[at + "attn.hook_pattern"], v)
        torch.testing.assert_close(z, cache[at + "attn.hook_z"], atol=2e-6, rtol=1e-5)
        result = torch.einsum("bphe,hed->bphd", cache[at + "attn.hook_z"], w.W_O[layer])
        torch.testing.assert_close(result, cache[at + "attn.hook_result"], atol=1e-6, rtol=1e-5)
        if arch not in SANDWICH:
            total = result.sum(2) + (0 if w.b_O is None else w.b_O[layer])
            torch.testing.assert_close(total, cache[at + "hook_attn_out"], atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_qk_weights_give_the_attention_scores(arch: str) -> None:
    """GPT-2 directly; Llama (grouped: 4 query heads on 2 kv heads) after HF's own rotary embedding."""
    hf, model = hooked(arch, attn_implementation="eager")
    tokens = random_tokens()
    _, cache = model.run_with_cache(tokens)
    w = head_weights(model.adapter)
    layer = 1
    x = reader_input(model, cache, layer, folded=True)
    q = project(x, w.W_Q[layer], None if w.b_Q is None else w.b_Q[layer]).transpose(1, 2)  # [b, head, p, e]
    k = project(x, w.W_K[layer], None if w.b_K is None else w.b_K[layer])[:, :, w.kv_head].transpose(1, 2)
    if arch == "llama":
        positions = torch.arange(tokens.shape[1])[None]
        cos, sin = hf.model.rotary_emb(x, positions)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
    scores = q @ k.transpose(-1, -2) / model.cfg.d_head**0.5  # [batch, head, q, k]
    causal = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool).tril()
    expected = cache[f"blocks.{layer}.attn.hook_attn_scores"]
    torch.testing.assert_close(scores[..., causal], expected[..., causal], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "gemma"])
def test_rotary_matrix_gives_the_scores_at_each_offset(arch: str) -> None:
    """score(i, j) = hook_q[i] R(i − j) hook_k[j]ᵀ / sqrt(d_head): Llama (grouped), NeoX (rotary on
    half of each head), Gemma; and the QK circuit at an offset gives the same from the residual."""
    _, model = hooked(arch, attn_implementation="eager")
    _, cache = model.run_with_cache(random_tokens())
    w = head_weights(model.adapter)
    layer, scale = 1, model.cfg.d_head**0.5
    q, k = cache[f"blocks.{layer}.attn.hook_q"], cache[f"blocks.{layer}.attn.hook_k"][:, :, w.kv_head]
    scores = cache[f"blocks.{layer}.attn.hook_attn_scores"]  # [batch, head, q, k]
    x = reader_input(model, cache, layer, folded=True)
    for i, j in ((5, 5), (5, 4), (9, 2), (11, 0)):
        rotation = rotary_matrix(model.adapter, i - j)
        mine = torch.einsum("bhe,ef,bhf->bh", q[:, i], rotation, k[:, j]) / scale
        torch.testing.assert_close(mine, scores[:, :, i, j], atol=2e-5, rtol=1e-4)
        if w.b_Q is None and w.b_K is None:
            circuit = qk_circuit(w, layer, 2, rotation)
            by_circuit = torch.einsum("bd,de,be->b", x[:, i], circuit.dense(), x[:, j]) / scale
            torch.testing.assert_close(by_circuit, scores[:, 2, i, j], atol=2e-5, rtol=1e-4)
    with pytest.raises(InputError, match="no rotary embedding"):
        rotary_matrix(hooked("gpt2")[1].adapter, 1)


def test_grouped_heads_are_views_not_copies() -> None:
    _, model = hooked("llama")
    w = head_weights(model.adapter)
    assert w.kv_head.tolist() == [0, 0, 1, 1]
    assert w.key(1, 3).data_ptr() == w.W_K[1, 1].data_ptr()
    assert w.value(0, 1).data_ptr() == w.W_V[0, 0].data_ptr()
    assert w.b_Q is None and w.b_O is None  # Llama has no attention biases
    qwen = head_weights(hooked("qwen2")[1].adapter)
    assert qwen.b_Q is not None and qwen.b_K is not None and qwen.b_V is not None and qwen.b_O is None


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma"])
def test_folded_unembedding_gives_the_logits(arch: str) -> None:
    """logits = (resid / norm scale) W_U' + a constant (LayerNorm's bias through W_U)."""
    _, model = hooked(arch)
    _, cache = model.run_with_cache(random_tokens())
    resid = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    final = model.hf.get_submodule(model.adapter.final_sites()["ln_final.hook_normalized"].path)
    x = resid / norm_scale(final, resid, model.cfg.normalization == "LN")
    constant = final.bias @ model.W_U if getattr(final, "bias", None) is not None else 0
    logits = x @ folded_unembedding(model.adapter) + constant
    torch.testing.assert_close(logits, cache["hook_logits"], atol=1e-5, rtol=1e-4)
    plain = cache["ln_final.hook_normalized"] @ folded_unembedding(model.adapter, fold_norm=False)
    torch.testing.assert_close(plain, cache["hook_logits"], atol=1e-5, rtol=1e-4)


def test_models_without_a_linear_projection_or_lm_head_are_clear_errors() -> None:
    with pytest.raises(InputError, match="not a linear layer"):
        linear_matrix(torch.nn.ReLU())
    _, bert = hooked("bert")
    with pytest.raises(InputError, match="no unembedding"):
        folded_unembedding(bert.adapter)


@pytest.mark.slow
def test_smollm2_grouped_heads_reproduce_hook_z(smollm: HookedModel) -> None:
    """The real model: 9 query heads on 3 key/value heads, RMSNorm folded, no biases."""
    w = head_weights(smollm.adapter)
    assert w.W_Q.shape == (30, 9, 576, 64) and w.W_K.shape == (30, 3, 576, 64)
    assert w.kv_head.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and w.b_Q is None
    layer = 3
    text = "When Mary and John went to the store, John gave"
    _, cache = smollm.run_with_cache(text, names=f"blocks.{layer}.*", stop_at_layer=layer + 1)
    x = reader_input(smollm, cache, layer, folded=True)
    v = project(x, w.W_V[layer], None)[:, :, w.kv_head]
    z = torch.einsum("bhqk,bkhe->bqhe", cache[f"blocks.{layer}.attn.hook_pattern"], v)
    torch.testing.assert_close(z, cache[f"blocks.{layer}.attn.hook_z"], atol=1e-4, rtol=1e-4)
    out = torch.einsum("bphe,hed->bpd", z, w.W_O[layer])
    torch.testing.assert_close(out, cache[f"blocks.{layer}.hook_attn_out"], atol=1e-3, rtol=1e-4)
