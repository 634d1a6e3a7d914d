"""Direct logit attribution on tiny real HF models: the parts sum to the logit difference less the
bias terms, heads sum to their layer, and a one-layer, one-token case is computed by hand."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from features.feature_helpers import tiny_model
from rama.circuits.logit_attribution import direct_logit_attribution, single_token
from rama.errors import ConfigError, InputError
from rama.hooks.model import HookedModel
from tiny_models import CONFIGS, NoTokenizer, hooked, random_tokens

ANSWER, WRONG = torch.tensor([5, 6, 7]), torch.tensor([9, 10, 11])


def hf_logit_difference(hf: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        last = hf(tokens).logits[:, -1]  # [batch, d_vocab]
    rows = torch.arange(len(tokens))
    return last[rows, ANSWER] - last[rows, WRONG]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_parts_sum_to_the_logit_difference_less_the_bias_terms(arch: str) -> None:
    hf, model = hooked(arch)
    tokens = random_tokens(3, 7)
    result = direct_logit_attribution(model, tokens, ANSWER, WRONG)
    torch.testing.assert_close(result.total, hf_logit_difference(hf, tokens), rtol=0, atol=1e-5)
    torch.testing.assert_close(result.parts.sum(-1) + result.bias, result.total, rtol=0, atol=1e-5)
    assert result.labels[:2] == (["embed", "pos_embed"] if arch == "gpt2" else ["embed", "0_attn_out"])
    assert len(result.labels) == (2 if arch == "gpt2" else 1) + 2 * model.cfg.n_layers
    if arch == "llama":  # RMSNorm, no bias anywhere: the parts are the whole logit difference
        assert float(result.bias.abs().max()) == 0.0
    else:  # LayerNorm's bias: b · (W_U[:, answer] − W_U[:, wrong])
        norm = hf.get_submodule("transformer.ln_f" if arch == "gpt2" else "gpt_neox.final_layer_norm")
        W_U = model.W_U.detach()
        expected = (W_U[:, ANSWER] - W_U[:, WRONG]).T @ norm.bias.detach()
        torch.testing.assert_close(result.bias, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_heads_and_the_output_bias_sum_to_their_attention_layer(arch: str) -> None:
    _, model = hooked(arch)
    result = direct_logit_attribution(model, random_tokens(2, 6), 5, 9)
    assert result.heads is not None and result.attn_bias is not None
    assert result.heads.shape == (2, model.cfg.n_layers, model.cfg.n_heads)
    attn = result.layer_parts("attn_out")  # [batch, layer]
    torch.testing.assert_close(result.heads.sum(-1) + result.attn_bias, attn, rtol=0, atol=1e-6)
    if arch == "llama":  # o_proj has no bias: the heads alone make up the layer
        torch.testing.assert_close(result.heads.sum(-1), attn, rtol=0, atol=1e-6)
    else:  # GPT-2's c_proj bias, through the same frozen-scale LayerNorm, is the remainder
        assert float(result.attn_bias.abs().min()) > 1e-3


def test_a_single_logit_is_attributed_without_a_wrong_answer() -> None:
    hf, model = hooked("llama")
    tokens = random_tokens(2, 5)
    result = direct_logit_attribution(model, tokens, torch.tensor([4, 8]))
    with torch.no_grad():
        last = hf(tokens).logits[:, -1]
    torch.testing.assert_close(result.total, last[torch.arange(2), torch.tensor([4, 8])], rtol=0, atol=1e-5)
    torch.testing.assert_close(result.parts.sum(-1), result.total, rtol=0, atol=1e-5)


def test_padded_prompts_are_attributed_at_each_last_real_token() -> None:
    model = tiny_model()  # a word-level tokenizer: "w9 w10" is two tokens
    both = direct_logit_attribution(model, ["w5 w6 w7 w8", "w9 w10"], 5, 9)
    alone = direct_logit_attribution(model, "w9 w10", 5, 9)
    torch.testing.assert_close(both.parts[1], alone.parts[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(both.total[1], alone.total[0], rtol=0, atol=1e-5)


def one_layer_llama() -> HookedModel:
    torch.manual_seed(0)
    config = CONFIGS["llama"]()
    config.num_hidden_layers = 1
    hf = tf.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn(param.shape))
    return HookedModel(hf, NoTokenizer())


def rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * x / torch.sqrt(x.pow(2).mean() + eps)


def test_one_layer_one_token_by_hand() -> None:
    """One token attends only to itself (pattern 1), so z = v and every part is a few matrix products."""
    model = one_layer_llama()
    hf, cfg = model.hf, model.cfg
    layer, eps = hf.model.layers[0], hf.config.rms_norm_eps
    token, answer, wrong = 11, 5, 9
    with torch.no_grad():
        embed = hf.model.embed_tokens.weight[token]  # [d_model]
        v = layer.self_attn.v_proj.weight @ rms(
            embed, layer.input_layernorm.weight, eps
        )  # [kv_heads * d_head]
        group = cfg.n_heads // cfg.n_kv_heads
        z = v.view(cfg.n_kv_heads, cfg.d_head).repeat_interleave(group, 0)  # [head, d_head]
        W_O = layer.self_attn.o_proj.weight.view(
            cfg.d_model, cfg.n_heads, cfg.d_head
        )  # [d_model, head, d_head]
        head_writes = torch.einsum("mhd,hd->hm", W_O, z)  # [head, d_model]
        attn = head_writes.sum(0)
        x = rms(embed + attn, layer.post_attention_layernorm.weight, eps)
        mlp = layer.mlp.down_proj.weight @ (
            torch.nn.functional.silu(layer.mlp.gate_proj.weight @ x) * (layer.mlp.up_proj.weight @ x)
        )
        final = embed + attn + mlp
        scale = torch.sqrt(final.pow(2).mean() + eps)
        d = hf.lm_head.weight[answer] - hf.lm_head.weight[wrong]  # [d_model]
        w = hf.model.norm.weight

        def by_hand(part: torch.Tensor) -> float:
            return float((part / scale * w) @ d)

        expected = torch.tensor([by_hand(embed), by_hand(attn), by_hand(mlp)])
        expected_heads = torch.tensor([by_hand(h) for h in head_writes])

    result = direct_logit_attribution(model, torch.tensor([[token]]), answer, wrong)
    assert result.labels == ["embed", "0_attn_out", "0_mlp_out"]
    torch.testing.assert_close(result.parts[0], expected, rtol=1e-4, atol=1e-5)
    assert result.heads is not None
    torch.testing.assert_close(result.heads[0, 0], expected_heads, rtol=1e-4, atol=1e-5)
    assert float(result.scale[0]) == pytest.approx(float(scale), rel=1e-5)
    assert float(result.total[0]) == pytest.approx(float(expected.sum()), abs=1e-4)


def test_gemma2_attributes_layers_but_refuses_heads() -> None:
    _, model = hooked("gemma2")
    tokens = random_tokens(2, 5)
    result = direct_logit_attribution(model, tokens, 5, 9)
    assert result.heads is None  # heads write into a post-attention norm, not the residual
    torch.testing.assert_close(result.parts.sum(-1) + result.bias, result.total, rtol=0, atol=1e-4)
    with pytest.raises(ConfigError, match="per_head=False"):
        direct_logit_attribution(model, tokens, 5, 9, per_head=True)


def test_answers_must_be_one_token_each() -> None:
    model = tiny_model()
    assert single_token(model, "w5") == 5
    with pytest.raises(InputError, match="2 tokens"):
        single_token(model, "w5 w6")
    with pytest.raises(InputError, match="one answer token per prompt"):
        direct_logit_attribution(model, random_tokens(2, 4), [5, 6, 7])
