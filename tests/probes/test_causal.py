"""Steering along a probe's direction on a tiny word-level Llama: the flip-rate and perplexity arithmetic by
hand, a planted direction that flips a planted judgement, and clear errors for what cannot be steered."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from features.feature_helpers import tiny_model
from probes.probe_helpers import word_statements
from rama.errors import ConfigError, InputError
from rama.hooks.model import HookedModel
from rama.probes import LinearProbe, TrainedProbe, split_by_group
from rama.probes.causal import (
    CausalConfig,
    answer_ids,
    class_gap,
    flip_rates,
    judge,
    judge_prompts,
    perplexity,
    residual_direction,
    steer_truth_probe,
)

SITE = "blocks.1.hook_resid_post"  # the last block: the final norm and the unembedding follow
ANSWERS = (" w10", " w20")
TEMPLATE = "{statement} w5 w6"


@pytest.fixture(scope="module")
def model() -> HookedModel:
    return tiny_model()


def planted(model: HookedModel) -> torch.Tensor:
    """`[d_model]`: adding it raises logit(w10) − logit(w20) (the unembedding difference through the
    final RMSNorm's gain g: (W_U[10] − W_U[20]) · g ⊙ g ⊙ (W_U[10] − W_U[20]) > 0)."""
    gain = model.hf.model.norm.weight.detach()
    return (model.W_U[:, 10] - model.W_U[:, 20]).detach() * gain


def planted_probe(model: HookedModel) -> TrainedProbe:
    scale = torch.linspace(0.5, 2.0, 32)  # a standardised probe: w / scale must point along the plant
    probe = LinearProbe("logistic", planted(model) * scale, 0.0, torch.zeros(32), scale)
    return TrainedProbe(probe, SITE, "last", 0.5, 0.01, {"split": {"seed": 0, "val_fraction": 0.2,
                                                                    "test_fraction": 0.2}})  # fmt: skip


def test_flip_rates_by_hand() -> None:
    base = torch.tensor([True, True, True, False, False])
    minus = torch.tensor([False, True, False, False, False])  # 2 of the 3 judged true become false
    plus = torch.tensor([True, True, True, True, False])  # 1 of the 2 judged false becomes true
    assert flip_rates(base, minus, plus) == pytest.approx((2 / 3, 1 / 2))
    t2f, f2t = flip_rates(
        torch.tensor([False, False]), torch.tensor([False, False]), torch.tensor([True, False])
    )
    assert math.isnan(t2f) and f2t == 0.5


def test_perplexity_by_hand(model: HookedModel) -> None:
    text = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    with torch.no_grad():
        logprobs = model(text).float().log_softmax(-1)
    nll = [-float(logprobs[b, p, text[b, p + 1]]) for b in range(2) for p in range(3)]
    assert perplexity(model, text, [], batch_size=1) == pytest.approx(math.exp(sum(nll) / 6), rel=1e-5)


def test_direction_and_prompts(model: HookedModel) -> None:
    u = residual_direction(planted_probe(model))
    torch.testing.assert_close(u, planted(model) / planted(model).norm())
    [prompt] = judge_prompts(model, ["w30 w31 w32 w10"], TEMPLATE)
    assert prompt.tokens == (30, 31, 32, 10, 5, 6) and (prompt.start, prompt.stop) == (0, 4)
    [inside] = judge_prompts(model, ["w30 w31"], "w7 {statement} w5")
    assert (inside.start, inside.stop) == (1, 3)


def test_planted_direction_flips_a_planted_judgement(model: HookedModel) -> None:
    prompts = judge_prompts(model, word_statements(6).texts, TEMPLATE)
    v = planted(model) / planted(model).norm()
    base = judge(model, prompts, SITE, None, answers=ANSWERS)
    with torch.no_grad():  # the judgement by hand: the logits of the last token
        last = model(torch.tensor([p.tokens for p in prompts]))[:, -1]
    torch.testing.assert_close(base, last[:, 10] - last[:, 20])
    up, down = (judge(model, prompts, SITE, sign * 50 * v, answers=ANSWERS) for sign in (1, -1))
    assert bool((up > 0).all()) and bool((down < 0).all()) and bool((down < base).all())
    only_statement = judge(model, prompts, SITE, 50 * v, "statement", answers=ANSWERS)
    assert not torch.allclose(only_statement, up)  # the suffix is left alone: a smaller push


def test_steering_report_end_to_end(model: HookedModel, tmp_path: Path) -> None:
    rng = random.Random(0)
    documents = [" ".join(f"w{rng.randrange(3, 97)}" for _ in range(40)) for _ in range(150)]
    corpus = tmp_path / "words.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    dataset, trained = word_statements(30), planted_probe(model)
    u = residual_direction(trained)
    split = split_by_group(dataset, 0, 0.2, 0.2)
    gap = abs(class_gap(model, trained, dataset.subset(split.train), u))  # Δ from the training statements
    config = CausalConfig(strengths=(50 / gap,), template=TEMPLATE, answers=ANSWERS, random_directions=1,
                          ppl_tokens=32, ppl_context=16, corpus=str(corpus), progress=False)  # fmt: skip
    result = steer_truth_probe(model, trained, dataset, config)
    probe_row, random_row = result.rows
    assert (probe_row.direction, random_row.direction) == ("probe", "random")
    assert result.items == len(split.test) and 0 <= result.accuracy <= 1
    for rate in (probe_row.true_to_false, probe_row.false_to_true):  # NaN: no statement judged that way
        assert math.isnan(rate) or rate == 1.0
    assert probe_row.shift_plus > 0 > probe_row.shift_minus
    assert 0 <= random_row.true_to_false <= 1 and random_row.perplexity_plus > 1
    assert result.perplexity > 1 and "| probe | " in result.markdown()
    assert result.unit == pytest.approx(gap, rel=1e-4)


def test_what_cannot_be_steered(model: HookedModel) -> None:
    sparse = LinearProbe("ksparse", torch.ones(2), 0.0, torch.zeros(2), torch.ones(2), torch.tensor([0, 1]))
    with pytest.raises(InputError, match="ksparse probe reads SAE latents"):
        residual_direction(TrainedProbe(sparse, SITE, "last", 0.5, 0.01))
    with pytest.raises(ConfigError, match="positions 'some'"):
        CausalConfig(positions="some")
    with pytest.raises(ConfigError, match=r"one \{statement\}"):
        CausalConfig(template="This statement is")
    with pytest.raises(ConfigError, match="positive finite"):
        CausalConfig(strengths=(1.0, -2.0))
    prompts = judge_prompts(model, ["w30 w31"], TEMPLATE)
    with pytest.raises(InputError, match="several tokens"):
        judge(model, prompts, SITE, None, answers=(" w10 w11", " w20"))


@pytest.mark.slow
def test_smollm_answers_are_single_tokens(smollm: HookedModel) -> None:
    true_id, false_id = answer_ids(smollm)
    assert smollm.to_string([true_id]) == " true" and smollm.to_string([false_id]) == " false"
    [prompt] = judge_prompts(smollm, ["The city of Tokyo is in Japan."], "{statement} This statement is")
    assert (
        smollm.to_string(list(prompt.tokens[prompt.start : prompt.stop])) == "The city of Tokyo is in Japan."
    )
