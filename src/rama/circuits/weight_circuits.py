"""QK and OV circuits, composition and the direct path, read from the weights (Elhage et al. 2021).

Row-vector convention throughout: a head scores query `x_q` against key `x_k` with
`x_q W_QK x_kᵀ`, `W_QK = W_Q W_Kᵀ`, and writes `x W_OV`, `W_OV = W_V W_O` (both `[d_model, d_model]`,
rank `d_head`). Through the embedding and unembedding the full circuits are `[d_vocab, d_vocab]`
matrices of rank `d_head`: they are kept as `FactoredMatrix` (`A @ B`) and every summary (trace,
eigenvalues, norms, SVD) goes through small `r × r` matrices, so `d_vocab²` is never materialised.

Rotary models: the score between positions i and j is `x_i W_Q R(i − j) W_Kᵀ x_jᵀ` with `R` a
rotation of the `d_head` space; the QK circuit here is `W_Q W_Kᵀ`, i.e. `R = I`: the score a
query gives a key at its own position (relative offset 0), or a bag-of-tokens view of what the head
matches. What depends on the offset (a previous-token head's preference for j = i − 1) is not in it;
`qk_circuit(..., rotation=rotary_matrix(adapter, offset))` gives the circuit at a chosen offset.
Biases and the norms' per-token scale are left out, as in the paper; pass `fold_norm=True` weights
(`rama.models.head_weights`) to include the norms' learned scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from rama.errors import InputError
from rama.hooks.model import HookedModel
from rama.models.head_weights import HeadWeights, folded_unembedding, head_weights


@dataclass(frozen=True)
class FactoredMatrix:
    """The matrix `A @ B` (`A [..., m, r]`, `B [..., r, n]`) kept as its two factors."""

    A: torch.Tensor
    B: torch.Tensor

    def __post_init__(self) -> None:
        if self.A.ndim < 2 or self.B.ndim < 2 or self.A.shape[-1] != self.B.shape[-2]:
            raise InputError(
                f"a factored matrix needs A [..., m, r] and B [..., r, n]; got {tuple(self.A.shape)} "
                f"and {tuple(self.B.shape)}"
            )

    @property
    def shape(self) -> tuple[int, ...]:
        batch = torch.broadcast_shapes(self.A.shape[:-2], self.B.shape[:-2])
        return (*batch, self.A.shape[-2], self.B.shape[-1])

    @property
    def rank(self) -> int:
        """The inner dimension `r` (an upper bound on the true rank)."""
        return int(self.A.shape[-1])

    @property
    def T(self) -> FactoredMatrix:
        return FactoredMatrix(self.B.mT, self.A.mT)

    def __matmul__(self, other: torch.Tensor | FactoredMatrix) -> FactoredMatrix:
        if isinstance(other, FactoredMatrix):  # keep the smaller inner dimension
            if self.rank <= other.rank:
                return FactoredMatrix(self.A, (self.B @ other.A) @ other.B)
            return FactoredMatrix(self.A @ (self.B @ other.A), other.B)
        return FactoredMatrix(self.A, self.B @ other)

    def __rmatmul__(self, other: torch.Tensor) -> FactoredMatrix:
        return FactoredMatrix(other @ self.A, self.B)

    def dense(self) -> torch.Tensor:
        """`[..., m, n]`: the full product (only for small shapes)."""
        return self.A @ self.B

    def core(self) -> torch.Tensor:
        """`[..., r, r]`: `B @ A`, which has the same non-zero eigenvalues and trace as `A @ B`."""
        if self.A.shape[-2] != self.B.shape[-1]:
            raise InputError(f"eigenvalues and trace need a square matrix; this one is {self.shape}")
        return self.B @ self.A

    def trace(self) -> torch.Tensor:
        return self.core().diagonal(dim1=-2, dim2=-1).sum(-1)

    def eigenvalues(self) -> torch.Tensor:
        """`[..., r]` complex: the eigenvalues of `A @ B` apart from its `m − r` zeros."""
        return torch.linalg.eigvals(self.core())

    def frobenius_norm(self) -> torch.Tensor:
        """`‖A B‖_F = sqrt(tr(AᵀA · BBᵀ))`, from two `r × r` Gram matrices."""
        squared = ((self.A.mT @ self.A) * (self.B @ self.B.mT)).sum(dim=(-2, -1))
        return squared.clamp_min(0.0).sqrt()

    def svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Thin SVD `(U [..., m, k], S [..., k], Vh [..., k, n])` with `A B = U diag(S) Vh`, through the
        QR factors of `A` and `Bᵀ` and the SVD of their small core."""
        q_a, r_a = torch.linalg.qr(self.A)
        q_b, r_b = torch.linalg.qr(self.B.mT)
        u, s, vh = torch.linalg.svd(r_a @ r_b.mT, full_matrices=False)
        return q_a @ u, s, vh @ q_b.mT

    def singular_values(self) -> torch.Tensor:
        return self.svd()[1]

    def diagonal(self) -> torch.Tensor:
        """`[..., m]`: the diagonal of a square `A @ B` (how much each token maps to itself)."""
        return (self.A * self.B.mT).sum(-1)

    def rows(self, index: torch.Tensor | slice) -> FactoredMatrix:
        """The factored matrix of the rows `index` (e.g. a few source tokens)."""
        return FactoredMatrix(self.A[..., index, :], self.B)


def qk_circuit(
    weights: HeadWeights, layer: int, head: int, rotation: torch.Tensor | None = None
) -> FactoredMatrix:
    """`W_Q W_Kᵀ`, `[d_model (query side), d_model (key side)]`, rank `d_head`; with a rotary
    model's `rotation` (`rama.models.head_weights.rotary_matrix(adapter, offset)`), `W_Q R W_Kᵀ`:
    the circuit for keys `offset` positions before the query."""
    queries = weights.W_Q[layer, head] if rotation is None else weights.W_Q[layer, head] @ rotation
    return FactoredMatrix(queries, weights.key(layer, head).T)


def ov_circuit(weights: HeadWeights, layer: int, head: int) -> FactoredMatrix:
    """`W_V W_O`, `[d_model (read), d_model (written)]`, rank `d_head`."""
    return FactoredMatrix(weights.value(layer, head), weights.W_O[layer, head])


def full_ov_circuit(
    embedding: torch.Tensor, weights: HeadWeights, unembedding: torch.Tensor, layer: int, head: int
) -> FactoredMatrix:
    """`W_E W_OV W_U`, `[d_vocab (attended token), d_vocab (logit)]`: what attending to a token does
    to the logits if the head read the token's embedding directly (earlier layers ignored)."""
    circuit = ov_circuit(weights, layer, head)
    return FactoredMatrix(embedding @ circuit.A, circuit.B @ unembedding)


def full_qk_circuit(embedding: torch.Tensor, weights: HeadWeights, layer: int, head: int) -> FactoredMatrix:
    """`W_E W_QK W_Eᵀ`, `[d_vocab (query token), d_vocab (key token)]`, positions ignored."""
    circuit = qk_circuit(weights, layer, head)
    return FactoredMatrix(embedding @ circuit.A, circuit.B @ embedding.T)


def direct_path(embedding: torch.Tensor, unembedding: torch.Tensor) -> FactoredMatrix:
    """`W_E W_U`, `[d_vocab, d_vocab]`, rank `d_model`: the zero-layer (bigram) part of the logits."""
    return FactoredMatrix(embedding, unembedding)


def copying_score(circuit: FactoredMatrix) -> torch.Tensor:
    """`[...]`: Σ Re λ / Σ |λ| over the eigenvalues λ of a square (full OV) circuit, in [−1, 1]: 1 when
    every eigenvalue is positive (the head raises the logits of the tokens it attends to)."""
    return eigenvalue_sign_share(circuit.eigenvalues())


def eigenvalue_sign_share(eigenvalues: torch.Tensor) -> torch.Tensor:
    """Σ Re λ / Σ |λ| over the last axis (the positive-eigenvalue measure of Elhage et al.)."""
    return eigenvalues.real.sum(-1) / eigenvalues.abs().sum(-1).clamp_min(1e-30)


def copying_scores(weights: HeadWeights, embedding: torch.Tensor, unembedding: torch.Tensor) -> torch.Tensor:
    """`[layer, head]`: `copying_score` of every head's full OV circuit, through one `d_model²`
    matrix `W_U W_E` (the direct path's core): head h's core is `W_O[h] (W_U W_E) W_V[h]`."""
    direct_core = unembedding @ embedding  # [d_model, d_model]
    values = weights.W_V[:, weights.kv_head]  # [layer, head, d_model, d_head]
    cores = weights.W_O @ direct_core @ values  # [layer, head, d_head, d_head]
    return eigenvalue_sign_share(torch.linalg.eigvals(cores.double())).float()


def model_copying_scores(model: HookedModel, fold_norm: bool = True) -> torch.Tensor:
    """`[layer, head]` copying scores of a model with an LM head (norm scales folded by default)."""
    weights = head_weights(model.adapter, fold_norm)
    unembedding = folded_unembedding(model.adapter, fold_norm)
    return copying_scores(weights, model.W_E.detach().float(), unembedding)


def composition_score(first: FactoredMatrix, second: FactoredMatrix) -> torch.Tensor:
    """`‖first · second‖_F / (‖first‖_F ‖second‖_F)`: how much of two maps lines up, in [0, 1]."""
    return (first @ second).frobenius_norm() / (first.frobenius_norm() * second.frobenius_norm())


def _grams(weights: HeadWeights) -> dict[str, torch.Tensor]:
    """`[layer, head, d_head, d_head]` Gram matrices of each query head's factors (`GQ = W_QᵀW_Q`,
    `GK`, `GV` of the key/value head it reads, `GO = W_O W_Oᵀ`)."""
    keys, values = weights.W_K[:, weights.kv_head], weights.W_V[:, weights.kv_head]
    return {
        "GQ": weights.W_Q.mT @ weights.W_Q,
        "GK": keys.mT @ keys,
        "GV": values.mT @ values,
        "GO": weights.W_O @ weights.W_O.mT,
    }


def _pair_cores(out: torch.Tensor, reads: torch.Tensor) -> torch.Tensor:
    """`[writer layer, writer head, reader head, d_head, d_head]`: `W_O(writer) @ W_X(reader)` for
    every pair, as one matrix product (`out [w layer, w head, d_head, d_model]`, `reads [r head,
    d_model, d_head]`)."""
    n_layers, n_heads, d_head, d_model = out.shape
    flat = out.reshape(-1, d_model) @ reads.permute(1, 0, 2).reshape(d_model, -1)  # [(w, h, e), (r, f)]
    return flat.view(n_layers, n_heads, d_head, reads.shape[0], d_head).permute(0, 1, 3, 2, 4)


def _sandwich_norm(core: torch.Tensor, left_gram: torch.Tensor, right_gram: torch.Tensor) -> torch.Tensor:
    """`‖L C R‖_F` from `C` and the Grams `LᵀL`, `RRᵀ`: `sqrt(Σ C ⊙ (LᵀL C RRᵀ))`."""
    return (core * (left_gram @ core @ right_gram)).sum(dim=(-2, -1)).clamp_min(0.0).sqrt()


def head_compositions(weights: HeadWeights) -> dict[str, torch.Tensor]:
    """Q-, K- and V-composition of every earlier head (writer) into every later head (reader):
    `{"q"|"k"|"v": [writer layer, writer head, reader layer, reader head]}`, NaN where the writer is
    not in an earlier layer. With `W_OV` the writer's and `W_QK`, `W_OV'` the reader's:
    K: `‖W_QK W_OVᵀ‖`, Q: `‖W_OV W_QK‖`, V: `‖W_OV W_OV'‖`, each over the two norms (the paper's
    `‖W_A W_B‖_F / (‖W_A‖_F ‖W_B‖_F)`), computed from `d_head × d_head` matrices only; grouped
    key/value heads are multiplied once per kv head, then shared by the query heads reading them."""
    n_layers, n_heads = weights.n_layers, weights.n_heads
    g = _grams(weights)
    qk_norm = (g["GQ"] * g["GK"]).sum(dim=(-2, -1)).sqrt()  # [layer, head]
    ov_norm = (g["GV"] * g["GO"]).sum(dim=(-2, -1)).sqrt()
    shape, device = (n_layers, n_heads, n_layers, n_heads), weights.W_O.device
    scores = {kind: torch.full(shape, float("nan"), device=device) for kind in "qkv"}
    kv = weights.kv_head
    for reader in tqdm(range(1, n_layers), desc="composition", unit="layer", disable=n_layers < 8):
        out, gram_v = weights.W_O[:reader], g["GV"][:reader, :, None]  # writers; [.., 1, d_head, d_head]
        k_core = _pair_cores(out, weights.W_K[reader])[:, :, kv].mT  # K_rᵀ O_wᵀ
        k = _sandwich_norm(k_core, g["GQ"][reader], gram_v)
        q = _sandwich_norm(_pair_cores(out, weights.W_Q[reader]), gram_v, g["GK"][reader])
        v = _sandwich_norm(_pair_cores(out, weights.W_V[reader])[:, :, kv], gram_v, g["GO"][reader])
        writer_norm = ov_norm[:reader, :, None]  # [w layer, w head, 1]
        scores["k"][:reader, :, reader] = k / (writer_norm * qk_norm[reader])
        scores["q"][:reader, :, reader] = q / (writer_norm * qk_norm[reader])
        scores["v"][:reader, :, reader] = v / (writer_norm * ov_norm[reader])
    return scores


def strongest_compositions(scores: torch.Tensor, reader: tuple[int, int], k: int = 5) -> list[dict[str, Any]]:
    """The `k` earlier heads composing most strongly into `reader` `(layer, head)`, from one kind's
    `[layer, head, layer, head]` table: `[{"layer", "head", "score"}, …]`, strongest first."""
    column = scores[:, :, reader[0], reader[1]]  # [writer layer, writer head]
    valid = torch.nan_to_num(column, nan=-1.0).flatten()
    values, flat = valid.topk(min(k, int((valid >= 0).sum())))
    n_heads = column.shape[1]
    return [
        {"layer": i // n_heads, "head": i % n_heads, "score": round(v, 4)}
        for v, i in zip(values.tolist(), flat.tolist(), strict=True)
    ]
