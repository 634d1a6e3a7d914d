"""Writing through sites: identity writes change nothing, real writes land where the name says."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from rama.hooks import HookPoint, HookReturnError, SiteError
from tiny_models import ARCHITECTURES, hooked, random_tokens


def clone(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
    return activation.clone()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_writing_each_sites_own_value_back_changes_nothing(arch: str) -> None:
    _, model = hooked(arch)
    tokens = random_tokens()
    with torch.no_grad():
        clean = model(tokens)
        for site in model.sites:
            patched = model.run_with_hooks(tokens, fwd_hooks=[(site, clone)])
            if "hook_pattern" in site or "hook_attn_scores" in site or "hook_result" in site:
                # rama recomputes attention (or the output projection) from the replaced value
                torch.testing.assert_close(patched, clean, rtol=0, atol=1e-5, msg=site)
            else:
                assert torch.equal(patched, clean), site


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2", "bert"])
def test_zeroing_attn_out_equals_a_raw_hook_on_the_hf_module(arch: str) -> None:
    hf, model = hooked(arch)
    tokens = random_tokens()
    path = f"{model.adapter.block_path(0)}.{model.adapter.block_paths().attn_out.path}"

    def raw(module: Any, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (torch.zeros_like(output[0]), *output[1:])
        return torch.zeros_like(output)

    handle = hf.get_submodule(path).register_forward_hook(raw)
    with torch.no_grad():
        expected = model(tokens)
    handle.remove()
    with torch.no_grad():
        got = model.run_with_hooks(tokens, [("blocks.0.hook_attn_out", lambda a, h: torch.zeros_like(a))])
    assert torch.equal(got, expected)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3_text", "gpt_neox_serial"])
def test_adding_to_resid_mid_equals_adding_to_attn_out(arch: str) -> None:
    _, model = hooked(arch)
    tokens = random_tokens()
    delta = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        via_mid = model.run_with_hooks(tokens, [("blocks.0.hook_resid_mid", lambda a, h: a + delta)])
        via_attn = model.run_with_hooks(tokens, [("blocks.0.hook_attn_out", lambda a, h: a + delta)])
        _, cache = model.run_with_cache(
            tokens, "blocks.0.hook_resid_mid", fwd_hooks=[("blocks.0.hook_resid_mid", lambda a, h: a + delta)]
        )
        _, clean = model.run_with_cache(tokens, "blocks.0.hook_resid_mid")
    torch.testing.assert_close(via_mid, via_attn, rtol=0, atol=1e-5)
    torch.testing.assert_close(cache["blocks.0.hook_resid_mid"], clean["blocks.0.hook_resid_mid"] + delta)
    assert not torch.allclose(via_mid, model(tokens))


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "bert"])
def test_zeroing_a_heads_result_equals_zeroing_its_z(arch: str) -> None:
    _, model = hooked(arch)
    tokens = random_tokens()

    def zero_head_1(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        out = activation.clone()
        out[:, :, 1] = 0
        return out

    with torch.no_grad():
        via_result = model.run_with_hooks(tokens, [("blocks.0.attn.hook_result", zero_head_1)])
        via_z = model.run_with_hooks(tokens, [("blocks.0.attn.hook_z", zero_head_1)])
    torch.testing.assert_close(via_result, via_z, rtol=0, atol=1e-5)
    assert not torch.allclose(via_z, model(tokens), atol=1e-4)


def test_doubling_q_doubles_unmasked_scores_in_gpt2() -> None:
    _, model = hooked("gpt2")
    tokens = random_tokens()
    with torch.no_grad():
        _, clean = model.run_with_cache(tokens, "blocks.0.attn.hook_attn_scores")
        _, doubled = model.run_with_cache(
            tokens, "blocks.0.attn.hook_attn_scores", fwd_hooks=[("blocks.0.attn.hook_q", lambda a, h: 2 * a)]
        )
    causal = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool).tril()
    a, b = clean["blocks.0.attn.hook_attn_scores"], doubled["blocks.0.attn.hook_attn_scores"]
    torch.testing.assert_close(b[..., causal], 2 * a[..., causal], rtol=1e-5, atol=1e-6)


def test_replacing_the_pattern_reaches_the_output() -> None:
    _, model = hooked("llama")
    tokens = random_tokens()

    def attend_to_first(pattern: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        out = torch.zeros_like(pattern)
        out[..., 0] = 1.0
        return out

    with torch.no_grad():
        _, cache = model.run_with_cache(
            tokens,
            ["blocks.0.attn.hook_z", "blocks.0.attn.hook_v"],
            fwd_hooks=[("blocks.0.attn.hook_pattern", attend_to_first)],
        )
    z, v = cache["blocks.0.attn.hook_z"], cache["blocks.0.attn.hook_v"]
    expected = v[:, :1].repeat_interleave(2, dim=2).expand_as(z)  # every query copies position 0's value
    torch.testing.assert_close(z, expected, rtol=0, atol=1e-6)


def test_hooks_compose_in_order_and_cache_sees_the_result() -> None:
    _, model = hooked("llama")
    tokens = random_tokens()
    with torch.no_grad():
        _, cache = model.run_with_cache(
            tokens,
            "blocks.1.hook_resid_pre",
            fwd_hooks=[
                ("blocks.1.hook_resid_pre", lambda a, h: a * 0 + 1),
                ("blocks.1.hook_resid_pre", lambda a, h: a * 3),
            ],
        )
    assert torch.equal(
        cache["blocks.1.hook_resid_pre"], torch.full_like(cache["blocks.1.hook_resid_pre"], 3.0)
    )


def test_hooks_context_nests_and_is_removed_even_after_an_error() -> None:
    hf, model = hooked("llama")
    tokens = random_tokens()
    seen: list[str] = []

    def note(activation: torch.Tensor, hook: HookPoint) -> None:
        seen.append(hook.name)

    with torch.no_grad(), model.hooks([("blocks.0.hook_resid_pre", note)]):
        with model.hooks([("blocks.1.hook_resid_pre", note)]):
            model(tokens)
        model(tokens)
    assert seen == ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.0.hook_resid_pre"]

    def boom(activation: torch.Tensor, hook: HookPoint) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(tokens, [("blocks.0.attn.hook_pattern", boom), ("blocks.*.hook_mlp_out", boom)])
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in hf.modules())
    assert hf.config._attn_implementation == "sdpa"


def test_hook_point_knows_its_layer() -> None:
    assert HookPoint("blocks.7.attn.hook_q").layer() == 7
    assert HookPoint("hook_embed").layer() is None


def test_wrong_shape_or_dtype_from_a_hook_names_the_site_and_the_expected_shape() -> None:
    _, model = hooked("llama")
    tokens = random_tokens()
    with pytest.raises(
        HookReturnError, match=r"blocks\.0\.hook_mlp_out.*shape \(2, 12\).*expected \(2, 12, 32\)"
    ):
        model.run_with_hooks(tokens, [("blocks.0.hook_mlp_out", lambda a, h: a[..., 0])])
    with pytest.raises(HookReturnError, match=r"dtype torch.float64; expected torch.float32"):
        model.run_with_hooks(tokens, [("blocks.0.hook_mlp_out", lambda a, h: a.double())])
    with pytest.raises(HookReturnError, match="returned list"):
        model.run_with_hooks(tokens, [("blocks.0.hook_mlp_out", lambda a, h: [1])])


def test_unknown_site_lists_the_closest_names() -> None:
    _, model = hooked("llama")
    with pytest.raises(
        SiteError, match=r"unknown hook site 'blocks\.0\.hook_resid_psot'.*blocks\.0\.hook_resid_post"
    ):
        model.run_with_cache(random_tokens(), names=["blocks.0.hook_resid_psot"])
    with pytest.raises(SiteError, match="unknown hook site"):
        model.run_with_hooks(random_tokens(), [("blocks.9.*", clone)])


def test_stop_at_layer_runs_only_the_blocks_needed() -> None:
    _, model = hooked("llama")
    tokens = random_tokens()
    with torch.no_grad():
        _, full = model.run_with_cache(tokens)
        logits, early = model.run_with_cache(tokens, "blocks.0.*", stop_at_layer=1)
        _, all_early = model.run_with_cache(tokens, stop_at_layer=1)
    assert logits is None
    assert all(torch.equal(early[k], full[k]) for k in early)
    assert "blocks.1.hook_resid_pre" not in all_early and "blocks.0.hook_resid_post" in all_early
    with pytest.raises(ValueError, match="after stop_at_layer=1"):
        model.run_with_cache(tokens, ["blocks.1.hook_resid_pre"], stop_at_layer=1)
    with pytest.raises(ValueError, match=r"stop_at_layer must be in 1\.\.2"):
        model.run_with_cache(tokens, stop_at_layer=0)


def test_cache_options_device_dtype_stack_and_mask() -> None:
    _, model = hooked("llama")
    tokens = random_tokens()
    _, cache = model.run_with_cache(tokens, "blocks.*.hook_resid_post", dtype=torch.float16, device="cpu")
    stacked = cache.stack("hook_resid_post")
    assert stacked.shape == (2, 2, 12, 32) and stacked.dtype == torch.float16
    assert not stacked.requires_grad and cache.attention_mask is None
    with pytest.raises(SiteError, match="not in this cache"):
        cache["blocks.0.hook_resid_pre"]
