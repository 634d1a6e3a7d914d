"""Logit effects, decoder-cosine neighbours and co-firing, computed in chunks, equal the full matrices."""

from __future__ import annotations

import pytest
import torch

from rama.features.logit_effects import final_norm_gain, logit_effects, model_logit_effects
from rama.features.neighbours import CoFiring, nearest_by_cosine
from tiny_models import hooked


@pytest.mark.parametrize("arch", ["llama", "gemma", "gpt2"])
def test_final_norm_gain_is_what_the_norm_multiplies_by(arch: str) -> None:
    _, model = hooked(arch)
    norm = model.hf.get_submodule(model.adapter.final_sites()["ln_final.hook_normalized"].path)
    with torch.no_grad():
        norm.weight.add_(0.3 * torch.randn(norm.weight.shape))
    gain = final_norm_gain(model)
    x = torch.randn(5, model.cfg.d_model)
    x = x - x.mean(-1, keepdim=True)  # zero mean: LayerNorm and RMSNorm divide by the same size
    with torch.no_grad():
        out = norm(x) - getattr(norm, "bias", None) if getattr(norm, "bias", None) is not None else norm(x)
    size = x.pow(2).mean(-1, keepdim=True).sqrt()
    assert torch.allclose(out, x / size * gain, atol=1e-3)
    assert not torch.allclose(gain, torch.ones_like(gain))


def test_logit_effects_in_chunks_equal_the_full_product() -> None:
    generator = torch.Generator().manual_seed(0)
    W_dec, W_U, gain = (
        torch.randn(10, 8, generator=generator),
        torch.randn(8, 30, generator=generator),
        torch.rand(8),
    )
    effects = logit_effects(W_dec, W_U, gain, n=4, chunk=3)
    full = (W_dec * gain) @ W_U
    assert torch.equal(effects.promoted_ids, full.topk(4, dim=1).indices)
    assert torch.allclose(effects.promoted, full.topk(4, dim=1).values)
    assert torch.equal(effects.suppressed_ids, full.topk(4, dim=1, largest=False).indices)
    assert (effects.suppressed[:, 0] <= effects.suppressed[:, -1]).all()


def test_model_logit_effects_use_the_unembedding() -> None:
    _, model = hooked("llama")
    W_dec = torch.randn(6, model.cfg.d_model)
    effects = model_logit_effects(model, W_dec, n=3)
    full = W_dec @ model.W_U.detach()
    assert torch.equal(effects["direct"].promoted_ids, full.topk(3, dim=1).indices)
    normed = (W_dec * final_norm_gain(model)) @ model.W_U.detach()
    assert torch.equal(effects["norm"].promoted_ids, normed.topk(3, dim=1).indices)
    assert not torch.equal(effects["norm"].promoted_ids, effects["direct"].promoted_ids)


def test_nearest_by_cosine_in_chunks_equals_the_full_matrix() -> None:
    W_dec = torch.randn(11, 5, generator=torch.Generator().manual_seed(1))
    values, ids = nearest_by_cosine(W_dec, n=3, chunk=4)
    unit = torch.nn.functional.normalize(W_dec, dim=1)
    full = unit @ unit.T
    full.fill_diagonal_(-2)
    assert torch.equal(ids, full.topk(3, dim=1).indices)
    assert torch.allclose(values, full.topk(3, dim=1).values)
    assert not (ids == torch.arange(11)[:, None]).any()


def test_cofiring_jaccard_and_merge() -> None:
    fires = torch.tensor(
        [[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.bool
    )
    whole = CoFiring(4)
    whole.update(fires)  # many pairs for its size: the sparse product
    assert torch.equal(whole.pairs, (fires.int().T @ fires.int()).int())
    values, ids = whole.top(n=2, chunk=3)
    assert ids[0, 0] == 1 and values[0, 0] == pytest.approx(3 / 4)  # 0 fires 4 times, 1 three, together 3
    assert ids[2, 0] == 0 and values[2, 0] == pytest.approx(1 / 5)
    assert values[3].tolist() == [0.0, 0.0]  # never fires with anyone
    sparse = torch.rand(40, 64, generator=torch.Generator().manual_seed(0)) < 0.05
    assert int(sparse.sum(1).pow(2).sum()) < 64 * 64 // 4  # few pairs: counted pair by pair
    counted = CoFiring(64)
    counted.update(sparse)
    assert torch.equal(counted.pairs, (sparse.int().T @ sparse.int()).int())
    first, second = CoFiring(4), CoFiring(4)
    first.update(fires[:4])
    second.update(fires[4:])
    first.absorb(second)
    assert torch.equal(first.pairs, whole.pairs)
