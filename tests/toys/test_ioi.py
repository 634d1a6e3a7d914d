"""The IOI toy: the task is what it says, the shipped model solves it on name pairs it never saw,
and the heads its ground truth names carry the behaviour."""

from __future__ import annotations

import pytest
import torch

import rama
from rama.errors import ConfigError
from rama.models.sites import block_site
from rama.toys import pretrained
from rama.toys.ioi import TEMPLATES, IOITask, accuracy, logit_difference
from rama.toys.ioi_circuit import ioi_ground_truth
from rama.toys.toy_transformer import load_ground_truth


@pytest.fixture(scope="module")
def toy() -> rama.HookedModel:
    return rama.load(pretrained("ioi"))


def test_prompts_name_the_subject_twice_and_the_answer_once() -> None:
    task = IOITask()
    prompts = task.prompts(200, "train", torch.Generator().manual_seed(0))
    for prompt in prompts:
        words = ["<bos>", *prompt.text.split()]
        assert words.count(prompt.s) == 2 and words.count(prompt.io) == 1
        assert words[prompt.positions["IO"]] == prompt.io
        assert words[prompt.positions["S1"]] == words[prompt.positions["S2"]] == prompt.s
        assert prompt.positions["S1"] < prompt.positions["S2"] < prompt.positions["END"] == len(words) - 1
    assert {p.template for p in prompts} == set(range(len(TEMPLATES)))
    assert {p.s == p.text.split()[p.positions["S1"] - 1] for p in prompts} == {True}
    train = {frozenset(p) for p in task.name_pairs("train")}
    test = {frozenset(p) for p in task.name_pairs("test")}
    assert not train & test and len(test) == 38  # 20% of the 190 pairs


def test_the_toy_solves_ioi_on_held_out_name_pairs(toy: rama.HookedModel) -> None:
    task = IOITask()
    prompts = task.prompts(1000, "test", torch.Generator().manual_seed(99))
    assert accuracy(toy.hf, toy.tokenizer, prompts, task) >= 0.95
    tokens, _ = task.encode(prompts, toy.tokenizer)
    with torch.no_grad():
        difference = logit_difference(toy(tokens), prompts, toy.tokenizer)
    assert float(difference.mean()) > 3.0
    truth = load_ground_truth(pretrained("ioi"))
    assert truth["test_accuracy"] >= 0.95


def test_logit_difference_on_a_hand_case() -> None:
    task = IOITask()
    tokenizer = rama.load(pretrained("ioi")).tokenizer
    prompt = task.prompts(1, "train", torch.Generator().manual_seed(5))[0]
    logits = torch.zeros(1, 24, len(tokenizer))
    end = prompt.positions["END"]
    logits[0, end, tokenizer.convert_tokens_to_ids(prompt.io)] = 2.5
    logits[0, end, tokenizer.convert_tokens_to_ids(prompt.s)] = -1.0
    assert logit_difference(logits, [prompt], tokenizer).tolist() == [3.5]


def test_named_heads_carry_the_behaviour(toy: rama.HookedModel) -> None:
    truth = load_ground_truth(pretrained("ioi"))
    circuit = [h for role in ("name_mover", "s_inhibition") for h in truth["heads"][role]]
    assert circuit, truth["heads"]
    task = IOITask()
    prompts = task.prompts(500, "test", torch.Generator().manual_seed(7))
    tokens, _ = task.encode(prompts, toy.tokenizer)

    def zero_heads(heads: list[list[int]]) -> float:
        hooks = []
        for layer in {layer for layer, _ in heads}:
            chosen = [h for where, h in heads if where == layer]

            def zero(z: torch.Tensor, hook: object, chosen: list[int] = chosen) -> torch.Tensor:
                z = z.clone()
                z[:, :, chosen] = 0
                return z

            hooks.append((block_site(layer, "attn.hook_z"), zero))
        with torch.no_grad():
            return float(logit_difference(toy.run_with_hooks(tokens, hooks), prompts, toy.tokenizer).mean())

    clean = zero_heads([])
    every = [[layer, h] for layer in range(toy.cfg.n_layers) for h in range(toy.cfg.n_heads)]
    others = [head for head in every if head not in circuit]
    generator = torch.Generator().manual_seed(0)
    control = [others[i] for i in torch.randperm(len(others), generator=generator)[: len(circuit)].tolist()]
    assert zero_heads(circuit) < 0.5 * clean  # the named heads matter
    assert zero_heads(circuit) < zero_heads(control)  # more than as many other heads


@pytest.mark.slow
def test_the_librarys_scores_and_ablations_reproduce_the_shipped_ground_truth(toy: rama.HookedModel) -> None:
    """Attention scores from `rama.circuits.head_scores`, per-template mean ablation from
    `rama.interventions.ablation`: on the 1,024 test prompts training used, the shipped numbers."""
    truth = load_ground_truth(pretrained("ioi"))
    task = IOITask()
    prompts = task.prompts(1024, "test", torch.Generator().manual_seed(20_000))
    again = ioi_ground_truth(toy.hf, toy.tokenizer, task, prompts)
    assert again["heads"] == truth["heads"]
    assert again["logit_difference"] == pytest.approx(truth["logit_difference"], abs=1e-4)
    for key in ("direct_effect", "mean_ablation_effect"):
        torch.testing.assert_close(torch.tensor(again[key]), torch.tensor(truth[key]), atol=1e-4, rtol=0)
    for name, scores in truth["attention"].items():
        torch.testing.assert_close(
            torch.tensor(again["attention"][name]), torch.tensor(scores), atol=1e-5, rtol=0
        )


def test_bad_task_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="test_fraction"):
        IOITask(test_fraction=1.0)
    with pytest.raises(ConfigError, match="split"):
        IOITask().name_pairs("validation")
