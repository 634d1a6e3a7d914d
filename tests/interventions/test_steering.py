"""Steering hooks change exactly what they say, at the positions they say, and nothing else;
on SmolLM2 a contrastive vector moves the model's sentiment both ways."""

from __future__ import annotations

import itertools

import pytest
import torch

import rama
from rama.errors import InputError, RamaError
from rama.interventions import add_vector, clamp_direction, contrastive_vector, project_out
from rama.interventions.logit_metrics import logit_difference
from rama.interventions.steering import (
    REFERENCE_TEXTS,
    SteeringOverflowError,
    check_finite_output,
    mean_activation,
    relative_vector,
    typical_norm,
)
from rama.interventions.sweep import continuation_perplexity, keyword_scorer


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


def test_contrast_averages_every_token_but_the_first_unless_asked_for_the_last(
    ioi_toy: rama.HookedModel,
) -> None:
    model, site = ioi_toy, "blocks.1.hook_resid_post"
    prompts = ["When Mary and John went", "the store"]
    acts = [model.run_with_cache(p, names=site)[1][site][0] for p in prompts]  # [pos, d] each
    after_first = torch.cat([a[1:] for a in acts]).mean(0)
    torch.testing.assert_close(mean_activation(model, site, prompts), after_first)
    last = torch.stack([a[-1] for a in acts]).mean(0)
    torch.testing.assert_close(mean_activation(model, site, prompts, last_only=True), last)
    vector = contrastive_vector(model, site, prompts[:1], prompts[1:])
    torch.testing.assert_close(vector, acts[0][1:].mean(0) - acts[1][1:].mean(0))
    with pytest.raises(InputError, match="empty"):
        contrastive_vector(model, site, ["  "], ["the store"])


def test_relative_strength_is_a_multiple_of_the_typical_residual_norm(ioi_toy: rama.HookedModel) -> None:
    model, site = ioi_toy, "blocks.2.hook_resid_post"
    by_hand = torch.cat(
        [model.run_with_cache(t, names=site)[1][site][0, 1:].norm(dim=-1) for t in REFERENCE_TEXTS]
    ).mean()
    unit = typical_norm(model, site)
    assert unit == pytest.approx(float(by_hand), rel=1e-5) and unit > 1.0
    v = torch.randn(64, generator=torch.Generator().manual_seed(2))
    scaled = relative_vector(model, site, v, 0.5)
    assert float(scaled.norm()) == pytest.approx(0.5 * unit, rel=1e-5)
    torch.testing.assert_close(scaled / scaled.norm(), v / v.norm())  # the direction is kept
    with pytest.raises(InputError, match="is zero"):
        relative_vector(model, site, torch.zeros(64), 1.0)


def test_overflowing_logits_are_a_rama_error(ioi_toy: rama.HookedModel) -> None:
    site = "blocks.1.hook_resid_pre"
    tokens = torch.tensor([[1, 20, 21]])
    check_finite_output(ioi_toy, tokens, [add_vector(ioi_toy, site, torch.ones(64), 3.0)])  # fine
    huge = add_vector(ioi_toy, site, torch.ones(64), 1e20)  # finite in the stream, inf in the norm
    with pytest.raises(SteeringOverflowError, match="logits NaN or inf") as caught:
        check_finite_output(ioi_toy, tokens, [huge])
    assert isinstance(caught.value, RamaError) and isinstance(caught.value, FloatingPointError)


SEA = ("The ship sailed on the sea", "The meeting starts at nine")  # the README's pair
NEUTRAL = [
    "Let me describe myself. I am",
    "Yesterday I went to",
    "The best thing about summer is",
    "My favourite place is",
]


def longest_repeat(tokens: list[int]) -> int:
    """The longest run of one token repeated back to back."""
    best = run = 1
    for before, after in itertools.pairwise(tokens):
        run = run + 1 if after == before else 1
        best = max(best, run)
    return best


def distinct_share(tokens: list[int]) -> float:
    """Distinct tokens / tokens: about 0.2 for a loop like "we, we, we, …", 0.5–0.8 for prose."""
    return len(set(tokens)) / len(tokens)


@pytest.mark.slow
def test_readme_sea_vector_brings_the_sea_and_stays_fluent(smollm: rama.HookedModel) -> None:
    """The README's example: one short pair, the default reduction, strength 0.25 on the relative scale."""
    site = "blocks.12.hook_resid_post"
    vector = relative_vector(smollm, site, contrastive_vector(smollm, site, [SEA[0]], [SEA[1]]), 0.25)
    sea = keyword_scorer(["sea", "seas", "ship*", "sail*", "ocean*", "boat*", "voyage*", "captain*"])
    counts, perplexities = {}, {}
    for name, hooks in (("plain", []), ("steered", [add_vector(smollm, site, vector)])):
        texts = smollm.generate(NEUTRAL, max_new_tokens=30, fwd_hooks=hooks)
        continuations = [t[len(p) :] for t, p in zip(texts, NEUTRAL, strict=True)]
        counts[name] = sum(sea(continuations))
        perplexities[name] = continuation_perplexity(smollm, NEUTRAL, continuations)
        for text in continuations:
            tokens = smollm.tokenizer.encode(text)
            assert longest_repeat(tokens) <= 3 and distinct_share(tokens) > 0.35, text  # no "we, we, we"
    assert counts["steered"] >= 3 and counts["steered"] >= counts["plain"] + 2  # measured: 3 of 4 vs 1
    assert max(perplexities["steered"]) < 10.0  # measured ≤ 7.0 (unsteered 1.9–4.2)


@pytest.mark.slow
def test_readme_sentiment_pair_moves_the_logit_difference_both_ways(smollm: rama.HookedModel) -> None:
    """The README's single pair at layer 12: with the default (every token but the first) it moves
    logit(" great") − logit(" terrible") both ways; the last token alone (the old default) does not."""
    site = "blocks.12.hook_resid_post"
    prompt = "My honest opinion of the film: it was"
    good, bad = (smollm.tokenizer.encode(w)[0] for w in (" great", " terrible"))

    def shift(vector: torch.Tensor, strength: float) -> float:
        with torch.no_grad():
            plain = logit_difference(smollm.run_with_hooks(prompt), good, bad)
            steered = smollm.run_with_hooks(prompt, [add_vector(smollm, site, vector, strength)])
            return float(logit_difference(steered, good, bad) - plain)

    vector = contrastive_vector(smollm, site, ["I love this"], ["I hate this"])
    assert shift(vector, 4.0) > 2.0 and shift(vector, -4.0) < -2.0  # measured +6.0, −3.5
    relative = relative_vector(smollm, site, vector, 1.0)
    assert shift(relative, 0.25) > 1.5 and shift(relative, -0.25) < -1.5  # measured +2.4, −1.9
    last = contrastive_vector(smollm, site, ["I love this"], ["I hate this"], last_only=True)
    assert shift(last, -4.0) > 0.0  # measured +1.0: the wrong way


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
