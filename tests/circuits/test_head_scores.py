"""Head scores: each pattern-level score against a hand-built pattern, and the model-level scores
against the induction toy's ground truth."""

from __future__ import annotations

import pytest
import torch

import rama
from rama.circuits import induction_scores, previous_token_scores
from rama.circuits.head_scores import attention_between, induction_score, previous_token_score
from rama.toys import load_ground_truth, pretrained
from rama.toys.induction import InductionTask


def one_hot_pattern(targets: list[list[int]]) -> torch.Tensor:
    """`[batch=1, head, q, k]`: head h at query q attends only to key `targets[h][q]`."""
    n = len(targets[0])
    pattern = torch.zeros(1, len(targets), n, n)
    for head, keys in enumerate(targets):
        for query, key in enumerate(keys):
            pattern[0, head, query, key] = 1.0
    return pattern


def test_previous_token_score_by_hand() -> None:
    # head 0 always looks back one; head 1 always at position 0 (one step back only from q = 1);
    # head 2 looks back one from q = 1 and q = 3
    pattern = one_hot_pattern([[0, 0, 1, 2, 3], [0, 0, 0, 0, 0], [0, 0, 0, 2, 0]])
    assert previous_token_score(pattern).tolist() == [1.0, 0.25, 0.5]  # q = 1..4
    assert previous_token_score(pattern, start=2).tolist() == pytest.approx([1.0, 0.0, 1 / 3])
    padded = torch.tensor([[True, True, True, True, False]])  # the last position is padding
    assert previous_token_score(pattern, queries=padded, start=2).tolist() == [1.0, 0.0, 0.5]
    stacked = torch.stack([pattern, pattern.flip(1)])  # [layer, batch, head, q, k]
    assert previous_token_score(stacked).shape == (2, 3)
    assert previous_token_score(stacked)[1].tolist() == [0.5, 0.25, 1.0]


def test_induction_score_by_hand() -> None:
    tokens = torch.tensor([[1, 7, 8, 9, 7, 8]])  # 7 8 repeat: at q = 4 (a 7) induction looks at k = 2 (the 8)
    # head 0 does; head 1 looks back one; head 2 looks at the earlier 7 itself (duplicate token)
    pattern = one_hot_pattern([[0, 0, 0, 0, 2, 3], [0, 0, 1, 2, 3, 4], [0, 0, 0, 0, 1, 2]])
    queries = torch.tensor([[False, False, False, False, True, False]])
    assert induction_score(pattern, tokens, queries).tolist() == [1.0, 0.0, 0.0]
    queries[0, 5] = True  # q = 5 (an 8): the target is k = 3 (after the earlier 8), which head 0 attends
    assert induction_score(pattern, tokens, queries).tolist() == [1.0, 0.0, 0.0]
    split = pattern.clone()
    split[0, 1, 4] = torch.tensor([0.0, 0.0, 0.4, 0.0, 0.6, 0.0])  # head 1 at q = 4: 0.4 on the target
    assert induction_score(split, tokens, queries).tolist() == pytest.approx([1.0, 0.2, 0.0])


def test_attention_between_named_positions_by_hand() -> None:
    pattern = torch.zeros(2, 1, 4, 4)  # [batch, head, q, k]
    pattern[0, 0, 3] = torch.tensor([0.1, 0.6, 0.2, 0.1])
    pattern[1, 0, 2] = torch.tensor([0.3, 0.3, 0.4, 0.0])
    scores = attention_between(pattern, torch.tensor([3, 2]), torch.tensor([1, 0]))
    assert scores.tolist() == pytest.approx([(0.6 + 0.3) / 2])


@pytest.fixture(scope="module")
def induction() -> rama.HookedModel:
    return rama.load(pretrained("induction-2l"))


def test_model_scores_name_the_toys_ground_truth_heads(induction: rama.HookedModel) -> None:
    truth = load_ground_truth(pretrained("induction-2l"))
    tokens, _ = InductionTask().batch(32, torch.Generator().manual_seed(1))
    previous = previous_token_scores(induction, [tokens[:16], tokens[16:]])
    assert previous.shape == (2, 4)
    [[layer, head]] = truth["heads"]["previous_token"][:1]
    assert int(previous[0].argmax()) == head and float(previous[layer, head]) > 0.5
    induction_by_head = induction_scores(induction, batch=4, half=20)  # repeated random words
    for layer, head in truth["heads"]["induction"]:
        assert float(induction_by_head[layer, head]) > 0.5
    assert float(induction_by_head[0].max()) < 0.3  # layer 0 cannot do induction
