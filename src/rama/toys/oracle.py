"""A 2-layer GPT-2 whose weights are set by hand, so that its task's answer flows through four known
edges and through no others: the exact oracle for circuit discovery (EAP, EAP-IG and ACDC must rank
those four edges above all the others).

The task: `<bos> s1 s2 s3 s4 end`, one of s1..s3 is the marker word `key`; predict the word after
the marker. A clean prompt and its corrupted partner put the marker in different slots and use
disjoint content words; the metric is logit(clean answer) − logit(corrupted answer) at `end`.

How the model does it (every write lands in its own block of orthogonal residual directions):
- a0.1, previous-token head (one-hot, by position): copies the previous token into `previous`.
- a1.0, mover: at `end` its query is a constant, its keys read only the `key` coordinate of
  `previous` (K-composition with a0.1), its values read the token: it writes the token after the
  marker into `answer`, the only block the unembedding reads. Its attention is soft (the target
  gets 0.8), so gradients through its keys are not zero.
- Distractors: a0.0 copies the current token into `self`, a1.3 copies `self` from three positions
  back into `self2`, a1.1 copies a0.1's `previous` from one position back into `previous2`: at `end`
  their outputs differ between clean and corrupted, but nothing reads them. a0.2 attends to `<bos>` (constant output), a1.2 looks for
  the marker but moves a constant, a0.3 is dead. The MLPs are zero (as in the attention-only toys).

LayerNorm: every residual direction is a pair of dimensions (+1, −1), so the residual's mean is 0
and the norm's centring does nothing; each writer outputs a vector of the same length whatever the
tokens (one-hot attention over same-length values), so the norm's scale is the same in the clean,
the corrupted and every singly patched run, except downstream of a1.0, which is on the path. A
constant component (`bias`, 16 units, from the position embeddings) keeps the residual long, so the
gradient through the norm's scale (which EAP sees even though patching cannot) stays small. That
only the four edges matter is checked by patching each edge alone (tests/toys/test_oracle.py).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rama.circuits.graph import Edge
from rama.errors import InputError
from rama.interventions.logit_metrics import logit_difference
from rama.toys.toy_transformer import SPECIAL_TOKENS, save_toy, word_tokenizer

MARKER, END = "key", "end"
CONTENT_WORDS = tuple(f"w{i}" for i in range(6))
ORACLE_WORDS = (MARKER, END, *CONTENT_WORDS)
N_VOCAB = len(SPECIAL_TOKENS) + len(ORACLE_WORDS)
N_SLOTS = 4  # words between <bos> and `end`; the marker sits in one of the first three
N_CTX, N_HEADS, D_HEAD = 8, 4, 42
HARD_SCORE = 300.0  # exp(-300) underflows to 0 in float32: one-hot attention
SOFT_SCORE = 3.0  # the mover's score for the position after the marker (0 elsewhere)
BIAS = 16.0  # the constant residual component
UNEMBED = 12.0
BOS_ID = 1
# Blocks of residual directions: (name, number of directions), in order.
BLOCKS = (
    ("bias", 1),
    ("token", N_VOCAB),
    ("position", N_CTX),
    ("self", N_VOCAB),
    ("previous", N_VOCAB),
    ("bos", 1),
    ("answer", N_VOCAB),
    ("previous2", N_VOCAB),
    ("marker", 1),
    ("self2", N_VOCAB),
)
TRUE_EDGE_LIST = (
    Edge("input", "a0.1", "v"),
    Edge("a0.1", "a1.0", "k"),
    Edge("input", "a1.0", "v"),
    Edge("a1.0", "logits"),
)
TRUE_EDGES = tuple(e.name for e in TRUE_EDGE_LIST)
# The same edges in a graph without q/k/v ports (`model_graph(..., split_qkv=False)`).
TRUE_EDGES_UNSPLIT = tuple(Edge(e.upstream, e.downstream).name for e in TRUE_EDGE_LIST)
HEAD_ROLES = {
    "a0.0": "attends to itself, copies the token into `self` (read only by a1.3): distractor",
    "a0.1": "previous-token head, copies the previous token into `previous`: on the path",
    "a0.2": "attends to <bos>, writes a constant into `bos`",
    "a0.3": "dead (all weights zero)",
    "a1.0": "mover: keys read `previous`[key], values read the token, writes `answer`: on the path",
    "a1.1": "previous-token head copying `previous` into `previous2` (read by nobody): distractor",
    "a1.2": "attends to the marker token but moves a constant into `marker`",
    "a1.3": "attends three positions back, copies `self` into `self2` (read by nobody): distractor",
}


def _offsets() -> dict[str, int]:
    starts, at = {}, 0
    for name, size in BLOCKS:
        starts[name] = at
        at += size
    return starts


OFFSETS = _offsets()
N_DIRECTIONS = sum(size for _, size in BLOCKS)
D_MODEL = N_HEADS * D_HEAD
assert 2 * N_DIRECTIONS <= D_MODEL, "every residual direction needs two dimensions"


def oracle_direction(block: str, index: int = 0) -> int:
    """Index of one residual direction: direction k is dimensions (2k, 2k+1) holding (+c, −c)."""
    return OFFSETS[block] + index


def residual_basis() -> torch.Tensor:
    """`[d_model, n_directions]`: column k is +1 at dimension 2k and −1 at 2k+1 (zero mean, norm √2)."""
    basis = torch.zeros(D_MODEL, N_DIRECTIONS)
    k = torch.arange(N_DIRECTIONS)
    basis[2 * k, k] = 1.0
    basis[2 * k + 1, k] = -1.0
    return basis


def layer_norm_scale(n_unit_writers: int) -> float:
    """1/σ of a residual holding `bias` plus `n_unit_writers` unit coefficients (GPT-2's eps 1e-5)."""
    squared = 2.0 * (BIAS**2 + n_unit_writers)  # each direction has norm² 2
    return 1.0 / math.sqrt(squared / D_MODEL + 1e-5)


@dataclass
class HeadSpec:
    """A head in residual coordinates: q/k/v read `[n_directions, d_head]`, o writes `[d_head, n_directions]`."""

    q: torch.Tensor = field(default_factory=lambda: torch.zeros(N_DIRECTIONS, D_HEAD))
    k: torch.Tensor = field(default_factory=lambda: torch.zeros(N_DIRECTIONS, D_HEAD))
    v: torch.Tensor = field(default_factory=lambda: torch.zeros(N_DIRECTIONS, D_HEAD))
    o: torch.Tensor = field(default_factory=lambda: torch.zeros(D_HEAD, N_DIRECTIONS))

    def attend(
        self, query: list[tuple[int, int]], key: list[tuple[int, int]], score: float, scale: float
    ) -> None:
        """Score `score` where a query direction and a key direction share a head dimension.
        `query`/`key` are (direction, head dim) pairs; a query read from `bias` is divided by BIAS.
        GPT-2 divides q·k by √d_head, and both sides carry the norm's scale."""
        for d, j in query:
            self.q[d, j] = (
                score * math.sqrt(D_HEAD) / scale**2 / (BIAS if d == oracle_direction("bias") else 1.0)
            )
        for d, j in key:
            self.k[d, j] = 1.0

    def copy_block(self, source: str, target: str, scale: float, size: int = N_VOCAB) -> None:
        """Values read block `source`, the output writes the same coefficients into block `target`."""
        for i in range(size):
            self.v[oracle_direction(source, i), i] = 1.0
            self.o[i, oracle_direction(target, i)] = 1.0 / scale


def positional_head(back: int, source: str, target: str, scale: float) -> HeadSpec:
    """One-hot attention from position t to t − back (to 0 when t < back), copying `source` → `target`."""
    head = HeadSpec()
    head.attend(
        [(oracle_direction("position", t), max(t - back, 0)) for t in range(N_CTX)], [], HARD_SCORE, scale
    )
    head.attend([], [(oracle_direction("position", s), s) for s in range(N_CTX)], HARD_SCORE, scale)
    head.copy_block(source, target, scale)
    return head


def layer_heads() -> list[list[HeadSpec]]:
    """The eight heads, `[layer][head]`, as described in the module docstring."""
    s0, s1 = layer_norm_scale(2), layer_norm_scale(5)  # token + position; + a0.0, a0.1, a0.2
    bos = HeadSpec()
    bos.attend([(oracle_direction("bias"), 0)], [(oracle_direction("position", 0), 0)], HARD_SCORE, s0)
    bos.v[oracle_direction("token", BOS_ID), 0] = 1.0
    bos.o[0, oracle_direction("bos")] = 1.0 / s0
    mover = HeadSpec()
    mover.attend(
        [(oracle_direction("bias"), 0)], [(oracle_direction("previous", _word_id(MARKER)), 0)], SOFT_SCORE, s1
    )
    mover.copy_block("token", "answer", s1)
    finder = HeadSpec()
    finder.attend(
        [(oracle_direction("bias"), 0)], [(oracle_direction("token", _word_id(MARKER)), 0)], SOFT_SCORE, s1
    )
    finder.v[oracle_direction("bias"), 0] = 1.0
    finder.o[0, oracle_direction("marker")] = 1.0 / (s1 * BIAS)
    layer0 = [
        positional_head(0, "token", "self", s0),
        positional_head(1, "token", "previous", s0),
        bos,
        HeadSpec(),
    ]
    layer1 = [
        mover,
        positional_head(1, "previous", "previous2", s1),
        finder,
        positional_head(3, "self", "self2", s1),
    ]
    return [layer0, layer1]


def _word_id(word: str) -> int:
    return len(SPECIAL_TOKENS) + ORACLE_WORDS.index(word)


def oracle_config() -> Any:
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=N_VOCAB,
        n_positions=N_CTX,
        n_embd=D_MODEL,
        n_layer=2,
        n_head=N_HEADS,
        n_inner=1,  # a zero MLP, as in the attention-only toys
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=BOS_ID,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )


@torch.no_grad()
def oracle_model() -> Any:
    """The GPT2LMHeadModel with every weight set from `layer_heads` and the residual layout."""
    from transformers import GPT2LMHeadModel

    model: Any = GPT2LMHeadModel(oracle_config())
    for parameter in model.parameters():
        parameter.zero_()
    basis = residual_basis()  # [d_model, n_directions]
    for name, module in model.named_modules():
        if name.endswith(("ln_1", "ln_2", "ln_f")):
            module.weight.fill_(1.0)
    tokens = torch.zeros(N_VOCAB, N_DIRECTIONS)
    tokens[torch.arange(N_VOCAB), oracle_direction("token") + torch.arange(N_VOCAB)] = 1.0
    positions = torch.zeros(N_CTX, N_DIRECTIONS)
    positions[torch.arange(N_CTX), oracle_direction("position") + torch.arange(N_CTX)] = 1.0
    positions[:, oracle_direction("bias")] = BIAS
    model.transformer.wte.weight.copy_(tokens @ basis.T)
    model.transformer.wpe.weight.copy_(positions @ basis.T)
    for block, heads in zip(model.transformer.h, layer_heads(), strict=True):
        for h, head in enumerate(heads):
            cols = slice(h * D_HEAD, (h + 1) * D_HEAD)
            for part, read in enumerate((head.q, head.k, head.v)):  # Conv1D: [d_in, d_out]
                block.attn.c_attn.weight[:, part * D_MODEL :][:, cols] = basis @ read / 2.0
            block.attn.c_proj.weight[cols] = head.o @ basis.T
    answer = torch.zeros(N_VOCAB, N_DIRECTIONS)
    answer[torch.arange(N_VOCAB), oracle_direction("answer") + torch.arange(N_VOCAB)] = UNEMBED / 2.0
    model.lm_head.weight.copy_(answer @ basis.T)  # [vocab, d_model]: reads only `answer`
    return model.eval()


@dataclass(frozen=True, eq=False)
class OracleTask:
    """Clean and corrupted prompts (same length), tokens `[batch, pos]`, answer and wrong ids `[batch]`."""

    clean: tuple[str, ...]
    corrupted: tuple[str, ...]
    clean_tokens: torch.Tensor
    corrupted_tokens: torch.Tensor
    answer_ids: torch.Tensor
    wrong_ids: torch.Tensor

    def metric(self, logits: torch.Tensor) -> torch.Tensor:
        """Mean logit(answer) − logit(wrong) at the last position (a scalar)."""
        return logit_difference(logits, self.answer_ids, self.wrong_ids).mean()


def oracle_prompts(n_pairs: int = 12, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """(clean words, corrupted words) pairs: the marker in different slots, disjoint content words."""
    if n_pairs < 1:
        raise InputError(f"the oracle task needs at least one prompt pair; got n_pairs={n_pairs}")
    generator = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(n_pairs):
        words = [CONTENT_WORDS[i] for i in torch.randperm(len(CONTENT_WORDS), generator=generator)]
        slots = torch.randperm(N_SLOTS - 1, generator=generator)[:2].tolist()
        pairs.append((_with_marker(words[:3], slots[0]), _with_marker(words[3:], slots[1])))
    return pairs


def _with_marker(words: list[str], marker_slot: int) -> list[str]:
    return [*words[:marker_slot], MARKER, *words[marker_slot:], END]


def oracle_task(n_pairs: int = 12, seed: int = 0) -> OracleTask:
    tokenizer = word_tokenizer(ORACLE_WORDS)
    pairs = oracle_prompts(n_pairs, seed)
    clean = tuple(" ".join(c) for c, _ in pairs)
    corrupted = tuple(" ".join(x) for _, x in pairs)
    answers = [c[c.index(MARKER) + 1] for c, _ in pairs]
    wrongs = [x[x.index(MARKER) + 1] for _, x in pairs]
    return OracleTask(
        clean,
        corrupted,
        tokenizer(list(clean), return_tensors="pt")["input_ids"],
        tokenizer(list(corrupted), return_tensors="pt")["input_ids"],
        torch.tensor(tokenizer.convert_tokens_to_ids(answers)),
        torch.tensor(tokenizer.convert_tokens_to_ids(wrongs)),
    )


def build_oracle(n_pairs: int = 12, seed: int = 0) -> tuple[Any, Any, OracleTask, dict[str, Any]]:
    """(model, tokenizer, task, ground truth). Built in milliseconds: nothing is trained."""
    model, tokenizer, task = oracle_model(), word_tokenizer(ORACLE_WORDS), oracle_task(n_pairs, seed)
    with torch.no_grad():
        clean = float(task.metric(model(input_ids=task.clean_tokens).logits))
        corrupted = float(task.metric(model(input_ids=task.corrupted_tokens).logits))
    truth = {
        "task": "oracle",
        "true_edges": list(TRUE_EDGES),
        "true_edges_unsplit": list(TRUE_EDGES_UNSPLIT),
        "n_layers": 2,
        "n_heads": N_HEADS,
        "heads": HEAD_ROLES,
        "metric": "mean over prompts of logit(answer) - logit(wrong) at the last position",
        "clean": list(task.clean),
        "corrupted": list(task.corrupted),
        "clean_tokens": task.clean_tokens.tolist(),
        "corrupted_tokens": task.corrupted_tokens.tolist(),
        "answer_ids": task.answer_ids.tolist(),
        "wrong_ids": task.wrong_ids.tolist(),
        "clean_metric": clean,
        "corrupted_metric": corrupted,
        "residual_blocks": {name: [OFFSETS[name], OFFSETS[name] + size] for name, size in BLOCKS},
        "settings": {"n_pairs": n_pairs, "seed": seed, "bias": BIAS, "soft_score": SOFT_SCORE},
    }
    return model, tokenizer, task, truth


def task_from_ground_truth(truth: dict[str, Any]) -> OracleTask:
    """The task stored in a saved oracle's `ground_truth.json`."""
    if truth.get("task") != "oracle":
        raise InputError(f"this ground truth is for task {truth.get('task')!r}, not the oracle")
    return OracleTask(
        tuple(truth["clean"]),
        tuple(truth["corrupted"]),
        torch.tensor(truth["clean_tokens"]),
        torch.tensor(truth["corrupted_tokens"]),
        torch.tensor(truth["answer_ids"]),
        torch.tensor(truth["wrong_ids"]),
    )


def save_oracle(out: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write the oracle as a Hugging Face folder with `ground_truth.json` (`rama.load(out)` loads it)."""
    model, tokenizer, _, truth = build_oracle()
    return save_toy(out, model, tokenizer, truth, overwrite=overwrite)
