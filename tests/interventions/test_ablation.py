"""Ablations on the induction toy, checked against its ground truth and by hand."""

from __future__ import annotations

import pytest
import torch

import rama
from rama.errors import ConfigError, InputError
from rama.interventions import mean_ablation, resample_ablation, zero_ablation
from rama.models.sites import block_site
from rama.toys import load_ground_truth, pretrained
from rama.toys.induction import InductionTask
from rama.toys.toy_transformer import masked_next_token_loss


@pytest.fixture(scope="module")
def induction() -> rama.HookedModel:
    return rama.load(pretrained("induction-2l"))


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return InductionTask().batch(64, torch.Generator().manual_seed(5))


def loss(model: rama.HookedModel, batch: tuple[torch.Tensor, torch.Tensor], hooks: list) -> float:
    tokens, mask = batch
    with torch.no_grad():
        return float(masked_next_token_loss(model.run_with_hooks(tokens, hooks), tokens, mask))


def test_ablating_the_named_heads_breaks_copying(induction: rama.HookedModel, batch) -> None:
    truth = load_ground_truth(pretrained("induction-2l"))
    clean = loss(induction, batch, [])
    [[layer, head]] = truth["heads"]["previous_token"][:1]
    others = [h for h in range(4) if [layer, h] not in truth["heads"]["previous_token"]]
    broken = loss(
        induction, batch, [zero_ablation(induction, block_site(layer, "attn.hook_z"), heads=[head])]
    )
    harmless = loss(
        induction, batch, [zero_ablation(induction, block_site(layer, "attn.hook_z"), heads=others[:1])]
    )
    assert broken > clean + 2.0 and harmless < broken - 1.5
    reference = InductionTask().batch(64, torch.Generator().manual_seed(6))[0]
    mean = loss(
        induction,
        batch,
        [mean_ablation(induction, block_site(layer, "attn.hook_z"), reference, heads=[head])],
    )
    resampled = loss(
        induction,
        batch,
        [resample_ablation(induction, block_site(layer, "attn.hook_z"), reference, heads=[head])],
    )
    assert mean > clean + 1.0 and resampled > clean + 1.0


def test_ablations_replace_exactly_what_they_name(induction: rama.HookedModel, batch) -> None:
    tokens = batch[0][:4]
    site = "blocks.1.attn.hook_z"
    reference = batch[0][8:16]
    _, ref_cache = induction.run_with_cache(reference, names=site)
    _, clean = induction.run_with_cache(tokens, names=site)
    hook = mean_ablation(induction, site, reference, heads=[2])
    _, ablated = induction.run_with_cache(tokens, names=site, fwd_hooks=[hook])
    expected = ref_cache[site][:, :, 2].mean(dim=(0, 1))  # mean over batch and positions: [d_head]
    torch.testing.assert_close(ablated[site][:, :, 2], expected.expand(4, tokens.shape[1], -1))
    assert torch.equal(ablated[site][:, :, [0, 1, 3]], clean[site][:, :, [0, 1, 3]])
    _, zeroed = induction.run_with_cache(
        tokens, names="blocks.0.hook_mlp_out", fwd_hooks=[zero_ablation(induction, "blocks.0.hook_attn_out")]
    )
    assert zeroed["blocks.0.hook_mlp_out"].abs().max() == 0  # attention-only toy: MLPs stay zero
    with pytest.raises(ConfigError, match="heads \\[7\\] do not exist"):
        zero_ablation(induction, site, heads=[7])
    with pytest.raises(ConfigError, match="no head dimension"):
        zero_ablation(induction, "blocks.1.hook_resid_pre", heads=[0])


def test_the_head_axis_comes_from_the_model(induction: rama.HookedModel, batch) -> None:
    tokens = batch[0][:2]
    site = "blocks.1.attn.hook_pattern"  # [batch, head, q, k]: heads on axis 1, not 2
    _, clean = induction.run_with_cache(tokens, names=site)
    _, ablated = induction.run_with_cache(tokens, names=site, fwd_hooks=[zero_ablation(induction, site, [3])])
    assert ablated[site][:, 3].abs().max() == 0
    assert torch.equal(ablated[site][:, :3], clean[site][:, :3])
    with pytest.raises(ConfigError, match="heads \\[4\\] do not exist"):
        zero_ablation(induction, site, heads=[4])  # 4 heads on axis 1 (axis 2 has 49 positions)


def test_group_mean_ablation_gives_each_row_its_groups_mean(induction: rama.HookedModel, batch) -> None:
    tokens = batch[0][:6]
    site = "blocks.0.attn.hook_z"
    groups = torch.tensor([0, 1, 0, 2, 1, 0])
    _, clean = induction.run_with_cache(tokens, names=site)
    hook = mean_ablation(induction, site, tokens, heads=[1], groups=groups)
    _, ablated = induction.run_with_cache(tokens, names=site, fwd_hooks=[hook])
    z = clean[site][:, :, 1]  # [batch, pos, d_head]
    expected = torch.stack(
        [z[[0, 2, 5]].mean(0), z[[1, 4]].mean(0), z[[0, 2, 5]].mean(0), z[3], z[[1, 4]].mean(0)]
    )
    torch.testing.assert_close(ablated[site][[0, 1, 2, 3, 4], :, 1], expected)
    torch.testing.assert_close(ablated[site][5, :, 1], z[[0, 2, 5]].mean(0))
    assert torch.equal(ablated[site][:, :, [0, 2, 3]], clean[site][:, :, [0, 2, 3]])
    with pytest.raises(InputError, match="one label per reference row"):
        mean_ablation(induction, site, tokens, heads=[1], groups=groups[:5])
    with pytest.raises(InputError, match="the reference's rows"):
        induction.run_with_hooks(tokens[:4], [hook])
