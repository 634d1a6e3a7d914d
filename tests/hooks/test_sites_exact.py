"""Every hook site against the Hugging Face intermediate it names, on tiny random models of each
architecture (no download). Exact where HF computes the same value; tight tolerance where rama
recomputes a value HF never stores (scores/pattern under sdpa, per-head results)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from tiny_models import ARCHITECTURES, hooked, random_tokens


def hf_output(hf: Any, tokens: torch.Tensor, **kwargs: Any) -> Any:
    with torch.no_grad():
        return hf(input_ids=tokens, **kwargs)


def main_output(out: Any) -> torch.Tensor:
    logits = getattr(out, "logits", None)
    return logits if logits is not None else out.last_hidden_state


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_logits_bit_identical_without_and_with_every_site_cached(arch: str) -> None:
    hf, model = hooked(arch)
    tokens = random_tokens()
    reference = main_output(hf_output(hf, tokens))
    with torch.no_grad():
        assert torch.equal(model(tokens), reference)
        logits, cache = model.run_with_cache(tokens)
    assert logits is not None and torch.equal(logits, reference)
    assert set(cache) == set(model.sites)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_residual_stream_equals_hidden_states(arch: str) -> None:
    hf, model = hooked(arch)
    tokens = random_tokens()
    hidden = hf_output(hf, tokens, output_hidden_states=True).hidden_states
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    n = model.cfg.n_layers
    for i in range(n):
        assert torch.equal(cache[f"blocks.{i}.hook_resid_pre"], hidden[i])
    for i in range(n - 1):
        assert torch.equal(cache[f"blocks.{i}.hook_resid_post"], hidden[i + 1])
    final = cache.get("ln_final.hook_normalized", cache[f"blocks.{n - 1}.hook_resid_post"])
    assert torch.equal(final, hidden[n])  # HF's last hidden state is after the final norm


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_pattern_equals_hf_eager_attention_probabilities(arch: str) -> None:
    tokens = random_tokens()
    eager_hf, eager_model = hooked(arch, "eager")
    attentions = hf_output(eager_hf, tokens, output_attentions=True).attentions
    with torch.no_grad():
        _, eager_cache = eager_model.run_with_cache(tokens, names="blocks.*.attn.hook_pattern")
    _, fast_model = hooked(arch, "sdpa")
    with torch.no_grad():
        _, fast_cache = fast_model.run_with_cache(tokens, names="blocks.*.attn.hook_pattern")
    for i, probabilities in enumerate(attentions):
        name = f"blocks.{i}.attn.hook_pattern"
        assert torch.equal(eager_cache[name], probabilities)
        torch.testing.assert_close(fast_cache[name], probabilities, rtol=0, atol=1e-6)
        assert torch.allclose(probabilities.sum(-1), torch.ones(()), atol=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_scores_softmax_to_pattern_and_mask_the_future(arch: str) -> None:
    _, model = hooked(arch)
    with torch.no_grad():
        _, cache = model.run_with_cache(random_tokens(), names=["blocks.1.attn.*"])
    scores, pattern = cache["blocks.1.attn.hook_attn_scores"], cache["blocks.1.attn.hook_pattern"]
    torch.testing.assert_close(torch.softmax(scores, -1), pattern, rtol=0, atol=1e-6)
    future = torch.ones(pattern.shape[-2:], dtype=torch.bool).triu(1)
    if model.cfg.is_causal:
        assert pattern[..., future].abs().max() == 0
    else:
        assert pattern[..., future].min() > 0


class AttentionRecorder:
    """Records what HF passes into its attention function, then runs eager."""

    def __init__(self) -> None:
        self.calls: list[dict[str, torch.Tensor]] = []

    def __call__(self, module: Any, query: Any, key: Any, value: Any, mask: Any, **kwargs: Any) -> Any:
        import sys

        eager = sys.modules[type(module).__module__].eager_attention_forward
        output, weights = eager(module, query, key, value, mask, **kwargs)
        self.calls.append({"query": query, "key": key, "value": value, "output": output})
        return output, weights


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_qkv_z_match_what_hf_feeds_its_attention_function(arch: str) -> None:
    recorder = AttentionRecorder()
    AttentionInterface.register("rama_test_recorder", recorder)
    AttentionMaskInterface.register("rama_test_recorder", ALL_MASK_ATTENTION_FUNCTIONS["eager"])
    hf, model = hooked(arch, "eager")
    hf.config._attn_implementation_internal = "rama_test_recorder"
    tokens = random_tokens()
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    assert len(recorder.calls) == model.cfg.n_layers
    for i, call in enumerate(recorder.calls):
        at = f"blocks.{i}.attn."
        # value is never rotated: [batch, kv_head, pos, d_head] -> [batch, pos, kv_head, d_head]
        assert torch.equal(cache[at + "hook_v"], call["value"].transpose(1, 2))
        assert torch.equal(cache[at + "hook_z"], call["output"].reshape(cache[at + "hook_z"].shape))
        rotary = model.cfg.positional == "rotary"
        unrotated = slice(int(getattr(hf.config, "rotary_pct", 1.0) * model.cfg.d_head), None)
        for site, passed in (("hook_q", call["query"]), ("hook_k", call["key"])):
            ours = cache[at + site]
            theirs = passed.transpose(1, 2)
            if not rotary:
                assert torch.equal(ours, theirs)
            elif arch.startswith("gpt_neox"):  # partial rotary: the unrotated dims pass straight through
                assert torch.equal(ours[..., unrotated], theirs[..., unrotated])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_z_is_pattern_times_v(arch: str) -> None:
    _, model = hooked(arch)
    with torch.no_grad():
        _, cache = model.run_with_cache(random_tokens(), names=["blocks.0.attn.*"])
    pattern, v, z = (cache[f"blocks.0.attn.hook_{n}"] for n in ("pattern", "v", "z"))
    v = v.repeat_interleave(model.cfg.n_heads // model.cfg.n_kv_heads, dim=2)
    torch.testing.assert_close(torch.einsum("bhqk,bkhd->bqhd", pattern, v), z, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_head_results_sum_to_attention_output(arch: str) -> None:
    hf, model = hooked(arch)
    out_proj = hf.get_submodule(f"{model.adapter.block_path(1)}.{model.adapter.block_paths().out_proj}")
    with torch.no_grad():
        _, cache = model.run_with_cache(random_tokens(), names=["blocks.1.attn.hook_result", "blocks.1.*out"])
    summed = cache["blocks.1.attn.hook_result"].sum(-2) + (out_proj.bias if out_proj.bias is not None else 0)
    if arch in ("gemma2", "gemma3_text"):  # attn_out is after post_attention_layernorm
        post_norm = hf.get_submodule(f"{model.adapter.block_path(1)}.post_attention_layernorm")
        summed = post_norm(summed)
    torch.testing.assert_close(summed, cache["blocks.1.hook_attn_out"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_residual_sums(arch: str) -> None:
    hf, model = hooked(arch)
    with torch.no_grad():
        _, cache = model.run_with_cache(random_tokens(), names="blocks.0.*")
    pre, mid, post = (cache[f"blocks.0.hook_resid_{n}"] for n in ("pre", "mid", "post"))
    attn, mlp = cache["blocks.0.hook_attn_out"], cache["blocks.0.hook_mlp_out"]
    assert torch.equal(mid, pre + attn)
    if arch == "bert":  # post-LN: both sublayer outputs go through a LayerNorm
        assert torch.equal(
            cache["blocks.0.ln1.hook_normalized"], hf.encoder.layer[0].attention.output.LayerNorm(mid)
        )
        assert torch.equal(
            post, hf.encoder.layer[0].output.LayerNorm(mlp + cache["blocks.0.ln1.hook_normalized"])
        )
    elif model.cfg.parallel_attn_mlp:
        torch.testing.assert_close(post, pre + attn + mlp, rtol=0, atol=1e-6)
    else:
        assert torch.equal(post, mid + mlp)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_mlp_sites_compose(arch: str) -> None:
    hf, model = hooked(arch)
    mlp = hf.get_submodule(f"{model.adapter.block_path(0)}.{'intermediate' if arch == 'bert' else 'mlp'}")
    with torch.no_grad():
        _, cache = model.run_with_cache(random_tokens(), names="blocks.0.mlp.*")
    pre, post = cache["blocks.0.mlp.hook_pre"], cache["blocks.0.mlp.hook_post"]
    act = getattr(mlp, "act_fn", None) or getattr(mlp, "act", None) or mlp.intermediate_act_fn
    expected = act(pre) * cache["blocks.0.mlp.hook_pre_linear"] if model.cfg.gated_mlp else act(pre)
    assert torch.equal(post, expected)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_keep_grad_gives_every_site_a_gradient_without_changing_the_logits(arch: str) -> None:
    """Attribution patching needs ∂output/∂site for sites that are views of module tensors (one
    head of a fused q|k|v, resid_mid, per-head results): the cached tensor must feed the forward."""
    hf, model = hooked(arch)
    tokens = random_tokens()
    reference = main_output(hf_output(hf, tokens))
    sites = [s for s in model.sites if not s.endswith(("hook_attn_scores", "hook_pattern"))]
    logits, cache = model.run_with_cache(tokens, names=sites, keep_grad=True)
    assert logits is not None
    torch.testing.assert_close(logits.detach(), reference, atol=1e-5, rtol=1e-5)
    upstream = [s for s in sites if s not in ("hook_logits",) and not s.startswith("ln_final")]
    grads = torch.autograd.grad(logits.pow(2).sum(), [cache[s] for s in upstream], allow_unused=True)
    missing = [s for s, g in zip(upstream, grads, strict=True) if g is None]
    assert not missing, missing
    # and the gradient is the true one: resid_pre of block 0 by finite differences along one direction
    site = "blocks.0.hook_resid_pre"
    direction = torch.randn_like(cache[site])
    analytic = float((grads[upstream.index(site)] * direction).sum())
    step = 1e-3

    def shifted(sign: float) -> float:
        hook = (site, lambda x, h: x + sign * step * direction)
        with torch.no_grad():
            return float(model.run_with_hooks(tokens, [hook]).double().pow(2).sum())

    numeric = (shifted(1.0) - shifted(-1.0)) / (2 * step)
    assert numeric == pytest.approx(analytic, rel=2e-2)
