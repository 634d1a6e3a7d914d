"""In-context copying: the task that makes a 2-layer attention-only transformer grow an induction
circuit (Elhage et al. 2021; Olsson et al. 2022), and a 1-layer model that cannot.

Each sequence is `<bos> A A R`: a random segment A of random length, the same segment again, then
random filler R. The length varies so no fixed-offset head can copy; predicting the second A needs
a previous-token head (layer 0) whose output the induction head (layer 1) matches against (K-composition).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rama.circuits.head_scores import PATTERN_SITES, induction_score, previous_token_score
from rama.errors import ConfigError
from rama.hooks.model import HookedModel
from rama.interventions.ablation import zero_ablation
from rama.models.sites import block_site
from rama.toys.toy_transformer import (
    Batch,
    ToyTransformerConfig,
    TrainSchedule,
    build_model,
    config_record,
    masked_next_token_loss,
    train_toy_transformer,
    word_tokenizer,
)

N_SPECIAL = 4  # pad, bos, eos, unk come first in the toy vocabulary


@dataclass(frozen=True)
class InductionTask:
    n_words: int = 64
    seq_len: int = 48  # tokens after <bos>
    min_repeat: int = 6
    max_repeat: int = 20

    def __post_init__(self) -> None:
        if not 2 <= self.min_repeat <= self.max_repeat or 2 * self.max_repeat > self.seq_len:
            raise ConfigError(
                f"need 2 <= min_repeat <= max_repeat and 2 * max_repeat <= seq_len; got "
                f"min_repeat={self.min_repeat}, max_repeat={self.max_repeat}, seq_len={self.seq_len}"
            )

    @property
    def words(self) -> list[str]:
        return [f"w{i}" for i in range(self.n_words)]

    def batch(self, size: int, generator: torch.Generator) -> Batch:
        """(tokens `[size, 1 + seq_len]`, mask of the positions induction can predict, same shape).

        A row is `<bos>` then a random segment of random length repeated until the row is full."""
        tokens = torch.empty(size, 1 + self.seq_len, dtype=torch.long)
        tokens[:, 0] = 1  # <bos>
        mask = torch.zeros(size, 1 + self.seq_len, dtype=torch.bool)
        lengths = torch.randint(self.min_repeat, self.max_repeat + 1, (size,), generator=generator)
        for row, length in enumerate(lengths.tolist()):
            segment = torch.randint(N_SPECIAL, N_SPECIAL + self.n_words, (length,), generator=generator)
            tokens[row, 1:] = segment.repeat(self.seq_len // length + 1)[: self.seq_len]
            # the first token of the first copy cannot be foreseen; every later one can, by induction
            mask[row, 2 + length :] = True
        return tokens, mask

    def all_positions(self, size: int, generator: torch.Generator) -> Batch:
        """The same rows with every next token in the loss (what the model is trained on)."""
        tokens, _ = self.batch(size, generator)
        mask = torch.ones_like(tokens, dtype=torch.bool)
        mask[:, 0] = False
        return tokens, mask


def train_induction(
    n_layers: int = 2,
    task: InductionTask | None = None,
    schedule: TrainSchedule | None = None,
    n_heads: int = 4,
    d_model: int = 64,
) -> tuple[Any, Any, list[dict[str, float]], dict[str, Any]]:
    """(model, tokenizer, loss curve, ground truth). The curve also logs the repeated-half loss."""
    task = task or InductionTask()
    schedule = schedule or TrainSchedule(steps=2500, batch_size=64, lr=3e-3)
    config = ToyTransformerConfig(n_layers=n_layers, n_heads=n_heads, d_model=d_model, n_ctx=1 + task.seq_len)
    model = build_model(config, N_SPECIAL + task.n_words, schedule.seed)
    held_out = task.batch(256, torch.Generator().manual_seed(10_000 + schedule.seed))
    curve = train_toy_transformer(
        model, task.all_positions, schedule, f"induction {n_layers}L", evaluate=_repeated_loss(held_out)
    )
    truth = induction_ground_truth(model, task, held_out)
    truth.update(task="induction", **config_record(config, schedule), data=task.__dict__)
    return model, word_tokenizer(task.words), curve, truth


def _repeated_loss(held_out: Batch) -> Callable[[Any], dict[str, float]]:
    def evaluate(model: Any) -> dict[str, float]:
        tokens, mask = held_out
        with torch.no_grad():
            logits = model(input_ids=tokens).logits
        return {"loss_repeated": float(masked_next_token_loss(logits, tokens, mask))}

    return evaluate


def ablated_loss(model: Any, held_out: Batch, heads: list[list[int]]) -> float:
    """Loss on the predictable positions with the outputs (`hook_z`) of `heads` `[[layer, head], …]` zeroed."""
    hooked = HookedModel(model, word_tokenizer(["w"]))
    tokens, mask = held_out
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    hooks = [zero_ablation(hooked, block_site(layer, "attn.hook_z"), hs) for layer, hs in by_layer.items()]
    with torch.no_grad():
        logits = hooked.run_with_hooks(tokens, hooks)
    return float(masked_next_token_loss(logits, tokens, mask))


def attention_scores(model: Any, held_out: Batch) -> dict[str, torch.Tensor]:
    """`[layer, head]` previous-token score (attention from t to t-1, t >= 2: position 1 can only
    look back at `<bos>`) and induction score (attention from a predictable position t to the keys
    k <= t whose previous token equals token t), both from `rama.circuits.head_scores`."""
    hooked = HookedModel(model, word_tokenizer(["w"]))
    tokens, mask = held_out
    with torch.no_grad():
        _, cache = hooked.run_with_cache(tokens, names=PATTERN_SITES)
    patterns = cache.stack("attn.hook_pattern")  # [layer, batch, head, q, k]
    queries = mask.roll(-1, dims=1)  # the position whose next token is predictable
    queries[:, -1] = False
    return {
        "previous_token": previous_token_score(patterns, start=2),
        "induction": induction_score(patterns, tokens, queries),
    }


def induction_ground_truth(model: Any, task: InductionTask, held_out: Batch) -> dict[str, Any]:
    """Which heads do what, by attention pattern (score ≥ 0.5), each role checked causally: zeroing
    the role's heads together must cost far more than zeroing all the other heads of its layer."""
    tokens, mask = held_out
    with torch.no_grad():
        clean = float(masked_next_token_loss(model(input_ids=tokens).logits, tokens, mask))
    scores = attention_scores(model, held_out)
    n_layers, n_heads = scores["induction"].shape
    single = [
        [ablated_loss(model, held_out, [[layer, h]]) - clean for h in range(n_heads)]
        for layer in range(n_layers)
    ]
    truth: dict[str, Any] = {
        "loss_repeated": clean,
        "loss_uniform": float(torch.log(torch.tensor(float(task.n_words)))),
        "previous_token_score": scores["previous_token"].tolist(),
        "induction_score": scores["induction"].tolist(),
        "single_head_ablation_loss_increase": single,
        "heads": {},
        "role_ablation_loss_increase": {},
        "other_heads_ablation_loss_increase": {},
    }
    if n_layers < 2:
        return truth
    for role, layer, score in (("previous_token", 0, "previous_token"), ("induction", 1, "induction")):
        heads = [[layer, h] for h in range(n_heads) if scores[score][layer, h] >= 0.5]
        others = [[layer, h] for h in range(n_heads) if [layer, h] not in heads]
        truth["heads"][role] = heads
        truth["role_ablation_loss_increase"][role] = ablated_loss(model, held_out, heads) - clean
        truth["other_heads_ablation_loss_increase"][role] = ablated_loss(model, held_out, others) - clean
    composition = composition_scores(model)
    truth["composition_layer0_to_layer1"] = {kind: scores.tolist() for kind, scores in composition.items()}
    return truth


def composition_scores(model: Any) -> dict[str, torch.Tensor]:
    """Elhage et al.'s weight-based composition of each layer-0 head (writer) with each layer-1 head
    (reader), `[writer, reader]`: ‖M‖_F / (‖W_QK‖_F ‖W_OV‖_F) with M = W_QK W_OVᵀ (K), W_OV W_QK (Q),
    W_OV W_OV' (V), in row-vector convention. Layer norms are ignored, as in the paper."""
    qk, ov = _head_matrices(model, 1), _head_matrices(model, 0)
    scores = {kind: torch.zeros(len(ov[1]), len(qk[0])) for kind in ("k", "q", "v")}
    for writer, w_ov in enumerate(ov[1]):
        for reader, (w_qk, w_ov_reader) in enumerate(zip(qk[0], qk[1], strict=True)):
            for kind, product, norm in (
                ("k", w_qk @ w_ov.T, w_qk.norm()),
                ("q", w_ov @ w_qk, w_qk.norm()),
                ("v", w_ov @ w_ov_reader, w_ov_reader.norm()),
            ):
                scores[kind][writer, reader] = product.norm() / (norm * w_ov.norm())
    return scores


def _head_matrices(model: Any, layer: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per head of a GPT-2 layer: (W_QK `[d_model, d_model]`, W_OV `[d_model, d_model]`)."""
    attention = model.transformer.h[layer].attn
    d_model = attention.c_attn.weight.shape[0]
    n_heads = model.config.n_head
    d_head = d_model // n_heads
    w_q, w_k, w_v = attention.c_attn.weight.detach().split(d_model, dim=1)  # Conv1D: [d_in, d_out]
    w_o = attention.c_proj.weight.detach()
    qk, ov = [], []
    for head in range(n_heads):
        part = slice(head * d_head, (head + 1) * d_head)
        qk.append(w_q[:, part] @ w_k[:, part].T)
        ov.append(w_v[:, part] @ w_o[part])
    return qk, ov
