"""Steering hooks change exactly what they say, at the positions they say, and nothing else;
on SmolLM2 a contrastive vector moves the model's sentiment both ways."""

from __future__ import annotations

import pytest
import torch

import rama
from rama.interventions import add_vector, clamp_direction, contrastive_vector, project_out
from rama.interventions.logit_metrics import logit_difference


def test_add_clamp_and_project_out_are_exact(ioi_toy: rama.HookedModel) -> None:
    model, site = ioi_toy, "blocks.1.hook_resid_pre"
    tokens = torch.tensor([[1, 20, 25, 21, 22, 23]])
    _, clean = model.run_with_cache(tokens, names=site)
    x = clean[site]
    v = torch.randn(64, generator=torch.Generator().manual_seed(0))
    u = v / v.norm()
    record = lambda hook: model.run_with_cache(tokens, names=site, fwd_hooks=[hook])[1][site]  # noqa: E731
    added = record(add_vector(model, site, v, strength=2.0, positions=[1, -1]))
    torch.testing.assert_close(added[0, [1, 5]], x[0, [1, 5]] + 2 * v)
    assert torch.equal(added[0, [0, 2, 3, 4]], x[0, [0, 2, 3, 4]])  # other positions untouched
    clamped = record(clamp_direction(model, site, 3 * v, value=7.5))
    torch.testing.assert_close(clamped[0] @ u, torch.full((6,), 7.5), atol=1e-4, rtol=0)
    orthogonal = lambda t: t - (t @ u)[..., None] * u  # noqa: E731
    torch.testing.assert_close(orthogonal(clamped), orthogonal(x), atol=1e-5, rtol=0)
    removed = record(project_out(model, site, v))
    assert float((removed @ u).abs().max()) < 1e-5


def test_bad_steering_requests_are_clear_and_leave_no_hooks(ioi_toy: rama.HookedModel) -> None:
    model, site = ioi_toy, "blocks.1.hook_resid_pre"
    with pytest.raises(ValueError, match=r"shape \(64,\)"):
        add_vector(model, site, torch.ones(63))
    with pytest.raises(ValueError, match="NaN or inf"):
        add_vector(model, site, torch.full((64,), float("nan")))
    with pytest.raises(ValueError, match="finite"):
        add_vector(model, site, torch.ones(64), strength=float("inf"))
    with pytest.raises(IndexError, match="outside the sequence of length 3"):
        model.run_with_hooks(
            torch.tensor([[1, 20, 21]]), [add_vector(model, site, torch.ones(64), positions=[5])]
        )
    tokens = torch.tensor([[1, 20, 21]])
    plain = rama.load(model.hf, model.tokenizer)(tokens)
    assert torch.equal(model(tokens), plain)  # the failed call left nothing attached


@pytest.mark.slow
def test_contrastive_sentiment_vector_steers_smollm2_both_ways(smollm: rama.HookedModel) -> None:
    site = "blocks.12.hook_resid_post"
    positive = [
        "I love this, it is wonderful",
        "What a great and happy day",
        "This is excellent and delightful",
    ]
    negative = ["I hate this, it is awful", "What a terrible and sad day", "This is horrible and disgusting"]
    vector = contrastive_vector(smollm, site, positive, negative)
    prompt = "My honest opinion of the film: it was"
    good, bad = (smollm.tokenizer.encode(w)[0] for w in (" great", " terrible"))

    def preference(strength: float) -> float:
        hooks = [add_vector(smollm, site, vector, strength)] if strength else []
        with torch.no_grad():
            return float(logit_difference(smollm.run_with_hooks(prompt, hooks), good, bad))

    neutral = preference(0.0)
    assert preference(4.0) > neutral + 2.0
    assert preference(-4.0) < neutral - 2.0
    steered = smollm.generate(prompt, max_new_tokens=8, fwd_hooks=[add_vector(smollm, site, vector, 4.0)])
    assert steered.startswith(prompt) and steered != smollm.generate(prompt, max_new_tokens=8)


def test_a_strength_that_overflows_is_an_error(ioi_toy: rama.HookedModel) -> None:
    site = "blocks.1.hook_resid_pre"
    hook = add_vector(ioi_toy, site, torch.full((64,), 1e30), strength=1e10)
    with pytest.raises(FloatingPointError, match="NaN or inf; lower the strength"):
        ioi_toy.run_with_hooks(torch.tensor([[1, 20, 21]]), [hook])


@pytest.mark.slow
def test_embedding_scorer_tells_on_concept_text_from_off_concept_text(minilm: rama.HookedModel) -> None:
    from rama.interventions.sweep import embedding_scorer

    scorer = embedding_scorer("the sea, ships and sailors", threshold=0.35, encoder=minilm)
    on = [
        "The sailors steered the ship through the waves.",
        "We watched the ocean from the deck of the boat.",
    ]
    off = ["The recipe needs two cups of flour.", "He filed his tax return on Monday."]
    assert scorer(on) == [True, True] and scorer(off) == [False, False]
