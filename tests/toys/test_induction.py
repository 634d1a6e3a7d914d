"""The shipped induction toys: the 2-layer model copies by induction, the 1-layer one cannot, and the
ground-truth file says which heads do it — checked again here from the weights."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from transformers import GPT2LMHeadModel

import rama
from rama.errors import ConfigError, OutputError
from rama.toys import build, pretrained
from rama.toys.induction import (
    InductionTask,
    ablated_loss,
    attention_scores,
    composition_scores,
    induction_ground_truth,
    train_induction,
)
from rama.toys.toy_transformer import TrainSchedule, load_ground_truth, masked_next_token_loss


@pytest.fixture(scope="module")
def held_out() -> tuple[torch.Tensor, torch.Tensor]:
    return InductionTask().batch(256, torch.Generator().manual_seed(777))  # not the training stream


def repeated_loss(model: object, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    tokens, mask = batch
    with torch.no_grad():
        return float(masked_next_token_loss(model(input_ids=tokens).logits, tokens, mask))  # type: ignore[operator]


def test_two_layers_copy_by_induction_and_one_layer_cannot(
    held_out: tuple[torch.Tensor, torch.Tensor],
) -> None:
    two = GPT2LMHeadModel.from_pretrained(pretrained("induction-2l")).eval()  # plain transformers
    one = GPT2LMHeadModel.from_pretrained(pretrained("induction-1l")).eval()
    uniform = float(torch.log(torch.tensor(64.0)))
    assert repeated_loss(two, held_out) < 0.1  # near-perfect copying
    assert repeated_loss(one, held_out) > 0.5 * uniform  # stays high: no induction circuit
    for model in (two, one):  # the MLPs add exactly nothing
        assert all(
            float(p.detach().abs().max()) == 0
            for block in model.transformer.h
            for p in block.mlp.parameters()
        )


def test_ground_truth_names_a_previous_token_head_and_induction_heads() -> None:
    truth = load_ground_truth(pretrained("induction-2l"))
    heads = truth["heads"]
    assert heads["previous_token"] and all(layer == 0 for layer, _ in heads["previous_token"])
    assert heads["induction"] and all(layer == 1 for layer, _ in heads["induction"])
    span = truth["loss_uniform"] - truth["loss_repeated"]
    for role in ("previous_token", "induction"):  # the roles are causal, the other heads are not
        assert truth["role_ablation_loss_increase"][role] > 0.5 * span
        assert truth["other_heads_ablation_loss_increase"][role] < 0.2 * span


def test_ground_truth_file_matches_the_shipped_weights(held_out: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = GPT2LMHeadModel.from_pretrained(pretrained("induction-2l")).eval()
    truth = load_ground_truth(pretrained("induction-2l"))
    scores = attention_scores(model, held_out)
    for role, key in (("previous_token", "previous_token"), ("induction", "induction")):
        for layer, head in truth["heads"][role]:
            assert float(scores[key][layer, head]) >= 0.5
    clean = repeated_loss(model, held_out)
    ablated = ablated_loss(model, held_out, truth["heads"]["induction"])
    assert ablated - clean > 2.0  # measured here on fresh sequences, not read from the file
    composition = composition_scores(model)
    writer = truth["heads"]["previous_token"][0][1]
    readers = [head for _, head in truth["heads"]["induction"]]
    # the previous-token head composes with the induction heads through their keys: more than any other
    # layer-0 head does, and more than through their queries
    k_by_writer = composition["k"][:, readers].mean(1)
    assert int(k_by_writer.argmax()) == writer
    assert float(k_by_writer[writer]) > 1.5 * float(composition["q"][writer, readers].mean())


def test_the_librarys_scores_and_ablations_reproduce_the_shipped_ground_truth() -> None:
    """The ground truth is now computed by `rama.circuits.head_scores` and `rama.interventions.ablation`;
    on the held-out batch training used (seed 0) it must give the numbers shipped with the weights."""
    model = GPT2LMHeadModel.from_pretrained(pretrained("induction-2l")).eval()
    truth = load_ground_truth(pretrained("induction-2l"))
    task = InductionTask()
    again = induction_ground_truth(model, task, task.batch(256, torch.Generator().manual_seed(10_000)))
    assert again["heads"] == truth["heads"]
    for key in ("previous_token_score", "induction_score", "single_head_ablation_loss_increase"):
        torch.testing.assert_close(torch.tensor(again[key]), torch.tensor(truth[key]), atol=1e-5, rtol=0)
    for key in ("role_ablation_loss_increase", "other_heads_ablation_loss_increase"):
        for role, value in truth[key].items():
            assert again[key][role] == pytest.approx(value, abs=1e-5)


def test_rama_opens_the_toy_with_every_site(held_out: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = rama.load(pretrained("induction-2l"))
    assert model.cfg.n_layers == 2 and model.cfg.d_vocab == 68
    assert model.to_str_tokens("w3 w4 w3") == ["<bos>", "w3", "w4", "w3"]  # BOS, as in training
    tokens, _ = held_out
    logits, cache = model.run_with_cache(tokens[:4], names="blocks.1.attn.hook_pattern")
    plain = GPT2LMHeadModel.from_pretrained(pretrained("induction-2l")).eval()
    with torch.no_grad():
        assert torch.equal(logits, plain(input_ids=tokens[:4]).logits)
    assert cache["blocks.1.attn.hook_pattern"].shape == (4, 4, 49, 49)


def test_training_is_reproducible_from_the_seed() -> None:
    schedule = TrainSchedule(steps=20, batch_size=8, seed=3, progress=False)
    first, _, curve, _ = train_induction(2, schedule=schedule)
    second, _, again, _ = train_induction(2, schedule=schedule)
    assert curve == again
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_shipped_curve_shows_the_phase_change() -> None:
    curve = json.loads((pretrained("induction-2l") / "training_curve.json").read_text())
    first, last = curve[0]["loss_repeated"], curve[-1]["loss_repeated"]
    assert first > 4.0 and last < 0.1
    # a drop, not a glide: most of it happens within a tenth of training
    steps = [p["step"] for p in curve]
    losses = [p["loss_repeated"] for p in curve]
    window = max(1, len(curve) // 10)
    biggest = max(losses[i] - losses[min(i + window, len(losses) - 1)] for i in range(len(losses)))
    assert biggest > 0.5 * (first - last), (steps, losses)


def test_impossible_task_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="max_repeat"):
        InductionTask(seq_len=20, max_repeat=12)
    with pytest.raises(ConfigError, match="unknown toy 'induction-3l'"):
        build("induction-3l", "unused")
    with pytest.raises(ConfigError, match="steps must be at least 1"):
        build("induction-2l", "unused", steps=0)


def test_a_folder_that_holds_files_is_refused_before_training(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    started = time.perf_counter()
    with pytest.raises(OutputError, match="already holds files"):
        build("induction-2l", tmp_path)
    assert time.perf_counter() - started < 1.0  # refused up front, not after training
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
