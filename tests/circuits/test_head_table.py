"""The duplicate-token score by hand, and the one-pass head table against the toys' known heads."""

from __future__ import annotations

import pytest
import torch

import rama
from rama.circuits import HeadTable, duplicate_token_score, head_table, pattern_head_scores
from rama.errors import ConfigError
from rama.toys import load_ground_truth, pretrained
from tiny_models import hooked


def test_duplicate_token_score_by_hand() -> None:
    tokens = torch.tensor([[1, 7, 8, 7, 8, 7]])  # the 7s at 1, 3, 5; the 8s at 2, 4
    pattern = torch.zeros(1, 3, 6, 6)  # [batch, head, q, k]
    for q in range(6):
        pattern[0, 0, q, max(q - 2, 0)] = 1.0  # head 0: two back, always an earlier copy from q = 3 on
        pattern[0, 1, q, q] = 1.0  # head 1: itself (same token, but not earlier)
        pattern[0, 2, q, max(q - 1, 0)] = 1.0  # head 2: one back, never the same token here
    queries = torch.tensor([[False, False, False, True, True, True]])
    assert duplicate_token_score(pattern, tokens, queries).tolist() == [1.0, 0.0, 0.0]
    pattern[0, 2, 5] = torch.tensor([0.0, 0.3, 0.0, 0.2, 0.0, 0.5])  # q = 5 (a 7): 0.3 + 0.2 on earlier 7s
    assert duplicate_token_score(pattern, tokens, queries)[2] == pytest.approx(0.5 / 3)


@pytest.fixture(scope="module")
def induction() -> rama.HookedModel:
    return rama.load(pretrained("induction-2l"))


def test_head_table_names_the_toys_ground_truth_heads(induction: rama.HookedModel) -> None:
    truth = load_ground_truth(pretrained("induction-2l"))
    table = head_table(induction, batch=8, half=20)
    assert set(table.scores) == {"previous_token", "duplicate_token", "induction", "copying"}
    assert all(s.shape == (2, 4) for s in table.scores.values())
    [[layer, head]] = truth["heads"]["previous_token"]
    assert table.top("previous_token", 1)[0][:2] == (layer, head)
    assert float(table.scores["previous_token"][layer, head]) > 0.5
    for layer, head in truth["heads"]["induction"]:
        assert float(table.scores["induction"][layer, head]) > 0.5
        assert float(table.scores["copying"][layer, head]) > 0.9
    assert float(table.scores["induction"][0].max()) < 0.3  # layer 0 cannot do induction
    assert float(table.scores["duplicate_token"].max()) < 0.3  # the toy never needed one
    numbers = table.to_json()
    assert list(numbers) == list(table.scores) and len(numbers["induction"]) == 2
    assert numbers["induction"][1][0] == round(float(table.scores["induction"][1, 0]), 4)


def test_pattern_scores_on_a_grouped_query_model_and_bad_lengths() -> None:
    _, model = hooked("llama")
    scores = pattern_head_scores(model, batch=2, half=8)
    for name, s in scores.items():
        assert s.shape == (2, 4) and bool(((s >= 0) & (s <= 1 + 1e-6)).all()), name
    with pytest.raises(ConfigError, match="half from 2 to 31"):
        pattern_head_scores(model, half=40)


def test_top_heads_order() -> None:
    table = HeadTable({"x": torch.tensor([[0.1, 0.9], [0.5, 0.2]])})
    assert table.top("x", 2) == [(0, 1, pytest.approx(0.9)), (1, 0, pytest.approx(0.5))]


def test_a_planted_duplicate_token_head_is_found() -> None:
    """Tiny GPT-2, layer 0 head 0 set to match tokens to themselves (`W_Q = W_K = 6 I` on the 8
    dimensions holding unit token embeddings, no positions): from the second copy it splits its
    attention between the query itself and the earlier copy, so its duplicate-token score is ≈ 0.5;
    every untouched head is near uniform."""
    hf, model = hooked("gpt2")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        embedding = torch.randn(hf.config.vocab_size, 8, generator=generator)
        hf.transformer.wte.weight.zero_()
        hf.transformer.wte.weight[:, :8] = embedding / embedding.norm(dim=-1, keepdim=True)
        hf.transformer.wpe.weight.zero_()
        block = hf.transformer.h[0]
        block.ln_1.weight.fill_(1.0)
        block.ln_1.bias.zero_()
        qkv, bias = block.attn.c_attn.weight, block.attn.c_attn.bias  # Conv1D [d_in, q | k | v]
        for start in (0, 32):  # head 0's query and key columns
            qkv[:, start : start + 8] = 0.0
            qkv[:8, start : start + 8] = 6 * torch.eye(8)
            bias[start : start + 8] = 0.0
    scores = pattern_head_scores(model, batch=4, half=10)["duplicate_token"]
    assert float(scores[0, 0]) > 0.4
    others = torch.cat([scores[0, 1:], scores[1]])
    assert float(others.max()) < 0.15
