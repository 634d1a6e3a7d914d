"""TopK's bf16 candidate selection (`select_dtype="bfloat16"`): the k latents are picked by a bf16
matmul, their values and gradients are fp32; the default path is unchanged, and so are its files."""

from __future__ import annotations

import warnings

import pytest
import torch

from rama.errors import ConfigError
from rama.sae import SAE, BatchTopKConfig, SAEConfig, TopKConfig, TrainConfig, fit
from rama.sae.base import TrainState
from rama.sae.topk import SelectedPre, native_bf16, sparse_decode, this_cpu_native_bf16
from rama.sae.train_config import resume_differences
from rama.toys import FeatureSuite


def topk_sae(select_dtype: str, d_in: int = 256, d_sae: int = 1024, k: int = 8) -> SAE:
    torch.manual_seed(0)
    arch = TopKConfig(k=k, select_dtype=select_dtype)
    return SAE.create(SAEConfig(d_in=d_in, d_sae=d_sae, architecture="topk", arch=arch))


def suite_inputs(n: int = 2048) -> torch.Tensor:
    """Sparse sums of 512 directions in 256 dims: real-ish (many near-ties among the pre-activations)."""
    inputs, _ = FeatureSuite().sample(n, torch.Generator().manual_seed(3))
    return inputs


def test_selected_values_are_the_fp32_pre_activations() -> None:
    sae, x = topk_sae("bfloat16"), suite_inputs()
    centred = x - sae.b_dec
    _, indices, values, _ = sae.selected(centred)
    exact = (centred @ sae.W_enc + sae.b_enc).gather(1, indices).relu()
    assert values.dtype == torch.float32
    torch.testing.assert_close(values, exact, rtol=1e-5, atol=1e-6)


def test_bf16_selection_agrees_with_fp32_selection() -> None:
    bf16, x = topk_sae("bfloat16"), suite_inputs()
    fp32 = topk_sae("float32")
    centred = x - fp32.b_dec
    pre, reference, _, _ = fp32.selected(centred)
    _, ours, _, _ = bf16.selected(centred)
    chosen = torch.zeros(x.shape[0], 1024, dtype=torch.bool)
    chosen.scatter_(1, reference, True)
    agreement = float(chosen.gather(1, ours).float().mean())
    assert agreement >= 0.99  # measured 0.992 (0.994 with k bf16 candidates, no re-ranking)
    # every miss is a tie at fp32 rounding: the picked values are fp32's k largest
    ranked = [pre.gather(1, picked).sort(dim=-1).values for picked in (ours, reference)]
    torch.testing.assert_close(ranked[0], ranked[1], rtol=0, atol=1e-5)


def test_gradients_equal_the_fp32_path_for_the_same_selection() -> None:
    sae, x = topk_sae("bfloat16"), suite_inputs(256).requires_grad_()
    weights = torch.randn(256, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        indices = (x @ sae.W_enc + sae.b_enc).topk(8, dim=-1).indices.sort(dim=-1).values
    rows = sae.W_enc.detach().T.contiguous()
    grads = []
    for values in (
        lambda: SelectedPre.apply(rows, x, sae.W_enc, sae.b_enc, indices),
        lambda: (x @ sae.W_enc + sae.b_enc).gather(1, indices),  # dense autograd
    ):
        sae.zero_grad()
        x.grad = None
        (values().relu() * weights).sum().backward()
        grads.append([t.grad.clone() for t in (x, sae.W_enc, sae.b_enc)])
    for ours, reference in zip(*grads, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_default_loss_is_unchanged_bit_for_bit() -> None:
    """The float32 path computes what TopK computed before the setting existed."""
    sae, x = topk_sae("float32"), suite_inputs(512)
    state = TrainState(tokens_since_fired=torch.zeros(1024))
    out = sae.loss(x, x, state)
    with torch.no_grad():
        centred = x - sae.b_dec
        pre = torch.addmm(sae.b_enc, centred, sae.W_enc)
        _, indices = pre.topk(8, dim=-1, sorted=False)
        values = pre.gather(1, indices).relu()
        reconstruction = sparse_decode(indices, values, sae.W_dec) + sae.b_dec
    assert torch.equal(out.reconstruction, reconstruction)


def test_aux_k_reconstructs_the_residual_from_the_top_dead_latents_by_hand() -> None:
    """AuxK (Gao et al. A.2) on a small case, by dense hand computation: each token's top
    `d_in / 2` pre-activations among the dead latents only, ReLU, decoded, FVU against the residual."""
    sae, x = topk_sae("float32", d_in=16, d_sae=64, k=4), suite_inputs(256)[:, :16]
    dead = torch.zeros(64, dtype=torch.bool)
    dead[torch.tensor([3, 5, 17, 18, 30, 41, 42, 50, 51, 52, 60, 63])] = True  # 12 dead >= d_in / 2 = 8
    state = TrainState(tokens_since_fired=dead.float() * 2.0, dead_after_tokens=1)
    out = sae.loss(x, x, state)
    with torch.no_grad():
        centred = x - sae.b_dec
        pre = centred @ sae.W_enc + sae.b_enc
        residual = x - out.reconstruction
        masked = pre.masked_fill(~dead, float("-inf"))
        values, indices = masked.topk(8, dim=-1)
        estimate = torch.zeros(256, 64).scatter(1, indices, values.relu()) @ sae.W_dec
        by_hand = (estimate - residual).pow(2).sum() / (residual - residual.mean(0)).pow(2).sum()
    assert bool(dead[indices].all())
    torch.testing.assert_close(out.terms["aux_k"], by_hand, rtol=1e-5, atol=1e-7)


def test_the_pre_activation_workspace_is_reused_and_changes_no_number() -> None:
    """The training step writes its `[batch, d_sae]` pre-activations into one reused tensor (a fresh
    one is a page-faulting 151 MB allocation per step on the CPU); the loss is what a fresh one gives."""
    sae, x = topk_sae("float32"), suite_inputs(512)
    reused = TrainState(tokens_since_fired=torch.zeros(1024))
    first = sae.loss(x, x, reused)
    buffer = reused.scratch["pre"]
    second = sae.loss(x[:256], x[:256], reused)  # a smaller last batch gets its own
    third = sae.loss(x, x, reused)
    assert reused.scratch["pre"].shape == (512, 1024) and buffer.shape == (512, 1024)
    fresh = sae.loss(x[:256], x[:256], TrainState(tokens_since_fired=torch.zeros(1024)))
    assert torch.equal(first.reconstruction, third.reconstruction)
    assert torch.equal(second.reconstruction, fresh.reconstruction)
    assert torch.equal(first.loss, third.loss)


def test_default_setting_is_left_out_of_saved_configs_so_old_checkpoints_resume() -> None:
    config = TrainConfig.create(architecture="topk", k=8)
    assert "select_dtype" not in config.to_dict()
    assert "select_dtype" not in SAEConfig(d_in=4, d_sae=8, arch=TopKConfig(k=2)).to_dict()
    bf16 = TrainConfig.create(architecture="topk", k=8, select_dtype="bfloat16")
    assert bf16.to_dict()["select_dtype"] == "bfloat16"
    assert resume_differences(config.to_dict(), config.to_dict()) == []
    assert resume_differences(config.to_dict(), bf16.to_dict()) != []  # a bf16 run is another recipe
    read_back = SAEConfig.from_dict(SAEConfig(d_in=4, d_sae=8, arch=TopKConfig(k=2)).to_dict())
    assert read_back.arch == TopKConfig(k=2, select_dtype="float32")


def test_bad_select_dtypes_are_refused() -> None:
    with pytest.raises(ConfigError, match="select_dtype must be one of float32, bfloat16"):
        topk_sae("float16")
    with pytest.raises(ConfigError, match="batchtopk and matryoshka select in float32"):
        SAE.create(
            SAEConfig(
                d_in=4, d_sae=8, architecture="batchtopk", arch=BatchTopKConfig(k=2, select_dtype="bfloat16")
            )
        )


def test_bf16_selection_trains_to_the_fp32_fvu() -> None:
    x = suite_inputs(16384)
    scores = []
    for select_dtype in ("float32", "bfloat16"):
        sae = fit(x, architecture="topk", d_sae=1024, k=8, select_dtype=select_dtype, batch_size=1024,
                  total_tokens=32768, progress=False)  # fmt: skip
        with torch.no_grad():
            scores.append(float((sae(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()))
    assert abs(scores[1] - scores[0]) <= 0.01 * scores[0] + 1e-3, scores


def test_a_cpu_without_native_bf16_is_named_before_training() -> None:
    assert native_bf16("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert native_bf16("flags : fpu amx_bf16 amx_tile\n")
    assert not native_bf16("flags\t\t: fpu sse avx2 fma avx512f\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for select_dtype in ("float32", "bfloat16"):
            fit(suite_inputs(256), architecture="topk", d_sae=64, k=4, select_dtype=select_dtype,
                batch_size=128, total_tokens=128, progress=False)  # fmt: skip
    emulated = [w for w in caught if "without native bf16" in str(w.message)]
    assert len(emulated) == (1 if this_cpu_native_bf16() is False else 0)  # this machine's real flags
