"""Factored matrices against the dense computation; QK/OV circuits, copying and composition
scores against hand computations, a planted copying head, and the toys' known heads."""

from __future__ import annotations

import pytest
import torch

import rama
from rama.circuits.weight_circuits import (
    FactoredMatrix,
    composition_score,
    copying_score,
    copying_scores,
    direct_path,
    full_ov_circuit,
    full_qk_circuit,
    head_compositions,
    model_copying_scores,
    ov_circuit,
    qk_circuit,
    strongest_compositions,
)
from rama.errors import InputError
from rama.models.head_weights import HeadWeights, folded_unembedding, head_weights
from rama.toys import load_ground_truth, pretrained
from tiny_models import hooked


def factored(*batch: int, m: int, r: int, n: int, seed: int = 0) -> FactoredMatrix:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(*batch, m, r, generator=generator, dtype=torch.float64)
    return FactoredMatrix(a, torch.randn(*batch, r, n, generator=generator, dtype=torch.float64))


def test_factored_products_shapes_and_transpose_equal_dense() -> None:
    f = factored(2, m=7, r=3, n=5)
    dense = f.dense()
    assert f.shape == (2, 7, 5) and f.rank == 3
    torch.testing.assert_close(f.T.dense(), dense.mT)
    right = torch.randn(5, 4, dtype=torch.float64)
    left = torch.randn(6, 7, dtype=torch.float64)
    torch.testing.assert_close((f @ right).dense(), dense @ right)
    torch.testing.assert_close((left @ f).dense(), left @ dense)
    low, high = factored(m=5, r=2, n=6, seed=1), factored(m=5, r=4, n=6, seed=2)
    for g in (low, high):  # both branches: keep the smaller inner dimension
        product = f @ g
        assert product.rank == min(3, g.rank)
        torch.testing.assert_close(product.dense(), dense @ g.dense())
    torch.testing.assert_close(f.rows(torch.tensor([0, 4])).dense(), dense[:, [0, 4]])
    with pytest.raises(InputError, match=r"A \[..., m, r\] and B \[..., r, n\]"):
        FactoredMatrix(torch.zeros(3, 2), torch.zeros(3, 4))


def test_factored_summaries_equal_dense() -> None:
    f = factored(3, m=6, r=2, n=6)
    dense = f.dense()
    torch.testing.assert_close(f.trace(), dense.diagonal(dim1=-2, dim2=-1).sum(-1))
    torch.testing.assert_close(f.diagonal(), dense.diagonal(dim1=-2, dim2=-1))
    torch.testing.assert_close(f.frobenius_norm(), torch.linalg.matrix_norm(dense))
    for mine, full in zip(f.eigenvalues(), torch.linalg.eigvals(dense), strict=True):
        largest = full[full.abs().argsort(descending=True)[:2]]  # the other 4 are zero
        assert sorted(mine.tolist(), key=abs) == pytest.approx(sorted(largest.tolist(), key=abs))
    u, s, vh = factored(m=8, r=3, n=5).svd()
    wide = factored(m=8, r=3, n=5).dense()
    torch.testing.assert_close(u @ torch.diag(s) @ vh, wide)
    torch.testing.assert_close(s, torch.linalg.svdvals(wide)[:3])
    torch.testing.assert_close(u.T @ u, torch.eye(3, dtype=torch.float64))
    with pytest.raises(InputError, match="square"):
        factored(m=4, r=2, n=5).trace()


@pytest.fixture(scope="module")
def tiny_llama() -> rama.HookedModel:
    return hooked("llama")[1]


def test_circuits_are_the_paper_products_grouped_heads_included(tiny_llama: rama.HookedModel) -> None:
    w = head_weights(tiny_llama.adapter)
    embed, unembed = tiny_llama.W_E.detach(), folded_unembedding(tiny_llama.adapter)
    layer, head = 1, 3  # reads key/value head 1
    w_q, w_k, w_v, w_o = w.W_Q[layer, head], w.W_K[layer, 1], w.W_V[layer, 1], w.W_O[layer, head]
    torch.testing.assert_close(qk_circuit(w, layer, head).dense(), w_q @ w_k.T)
    torch.testing.assert_close(ov_circuit(w, layer, head).dense(), w_v @ w_o)
    full_ov = full_ov_circuit(embed, w, unembed, layer, head)
    torch.testing.assert_close(full_ov.dense(), embed @ w_v @ w_o @ unembed, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(full_qk_circuit(embed, w, layer, head).dense(), embed @ w_q @ w_k.T @ embed.T)
    torch.testing.assert_close(direct_path(embed, unembed).dense(), embed @ unembed)
    # the copying score by hand: over the eigenvalues of the whole [d_vocab, d_vocab] matrix
    eigenvalues = torch.linalg.eigvals((embed @ w_v @ w_o @ unembed).double())
    by_hand = eigenvalues.real.sum() / eigenvalues.abs().sum()
    assert float(copying_score(full_ov)) == pytest.approx(float(by_hand), abs=1e-4)
    table = copying_scores(w, embed, unembed)
    assert table.shape == (2, 4)
    assert float(table[layer, head]) == pytest.approx(float(by_hand), abs=1e-4)
    torch.testing.assert_close(model_copying_scores(tiny_llama), table)


def test_composition_scores_against_dense_hand_computation(tiny_llama: rama.HookedModel) -> None:
    w = head_weights(tiny_llama.adapter)
    scores = head_compositions(w)
    assert set(scores) == {"q", "k", "v"} and scores["k"].shape == (2, 4, 2, 4)
    assert scores["k"][1].isnan().all() and scores["q"][0, :, 0].isnan().all()  # only earlier writers
    for writer in range(4):
        for reader in range(4):
            ov = w.W_V[0, writer // 2] @ w.W_O[0, writer]  # dense [d_model, d_model]
            qk = w.W_Q[1, reader] @ w.W_K[1, reader // 2].T
            ov_reader = w.W_V[1, reader // 2] @ w.W_O[1, reader]

            def score(a: torch.Tensor, b: torch.Tensor) -> float:
                return float((a @ b).norm() / (a.norm() * b.norm()))

            expected = {"k": score(qk, ov.T), "q": score(ov, qk), "v": score(ov, ov_reader)}
            for kind, value in expected.items():
                assert float(scores[kind][0, writer, 1, reader]) == pytest.approx(value, rel=1e-4)
            pair = composition_score(qk_circuit(w, 1, reader), ov_circuit(w, 0, writer).T)
            assert float(pair) == pytest.approx(expected["k"], rel=1e-4)


@pytest.fixture(scope="module")
def induction() -> rama.HookedModel:
    return rama.load(pretrained("induction-2l"))


def test_toy_composition_matches_its_ground_truth_and_names_the_previous_token_head(
    induction: rama.HookedModel,
) -> None:
    """The toy's ground truth computes the paper's scores densely from GPT-2's fused weights, norms
    ignored; K-composition into every induction head is strongest from the previous-token head."""
    truth = load_ground_truth(pretrained("induction-2l"))
    scores = head_compositions(head_weights(induction.adapter, fold_norm=False))
    for kind in "kqv":
        expected = torch.tensor(truth["composition_layer0_to_layer1"][kind])  # [writer, reader]
        torch.testing.assert_close(scores[kind][0, :, 1], expected, atol=1e-5, rtol=1e-4)
    [[layer, head]] = truth["heads"]["previous_token"]
    folded = head_compositions(head_weights(induction.adapter))
    for reader in truth["heads"]["induction"]:
        for table in (scores, folded):
            strongest = strongest_compositions(table["k"], (reader[0], reader[1]), k=2)
            assert (strongest[0]["layer"], strongest[0]["head"]) == (layer, head)
            assert strongest[0]["score"] > strongest[1]["score"]


def planted_weights(sign: float, d_model: int = 16, d_head: int = 4) -> tuple[HeadWeights, torch.Tensor]:
    """One layer, two heads: head 0's OV is `± W_V W_Vᵀ` (planted), head 1's is random; W_U = W_Eᵀ."""
    generator = torch.Generator().manual_seed(3)
    w_v = torch.randn(1, 2, d_model, d_head, generator=generator)
    w_o = torch.randn(1, 2, d_head, d_model, generator=generator)
    w_o[0, 0] = sign * w_v[0, 0].T
    weights = HeadWeights(
        W_Q=w_v.clone(), W_K=w_v.clone(), W_V=w_v, W_O=w_o, b_Q=None, b_K=None, b_V=None, b_O=None,
        kv_head=torch.arange(2), norm_folded=False,
    )  # fmt: skip
    return weights, torch.randn(50, d_model, generator=generator)


def test_copying_score_is_high_on_a_planted_copying_head_and_low_on_its_opposite() -> None:
    copier, embed = planted_weights(1.0)
    scores = copying_scores(copier, embed, embed.T)  # W_E W_V W_Vᵀ W_Eᵀ: positive semi-definite
    assert float(scores[0, 0]) == pytest.approx(1.0, abs=1e-5)
    assert abs(float(scores[0, 1])) < 0.9  # a random OV circuit is not a copier
    anti, embed = planted_weights(-1.0)
    assert float(copying_scores(anti, embed, embed.T)[0, 0]) == pytest.approx(-1.0, abs=1e-5)


def test_toy_induction_heads_copy(induction: rama.HookedModel) -> None:
    truth = load_ground_truth(pretrained("induction-2l"))
    scores = model_copying_scores(induction)
    for layer, head in truth["heads"]["induction"]:
        assert float(scores[layer, head]) > 0.9
