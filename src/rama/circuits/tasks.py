"""A circuit-discovery task: clean and corrupted prompts that line up token by token, and a metric.

Discovery methods patch one input's activations into the other position by position, so each
clean prompt and its corrupted twin must have the same length; prompts of different lengths go in
different batches. The metric maps a batch's logits to one number per prompt (higher = more of
the behaviour, e.g. a logit difference); `positions` says where it reads the logits (ACDC's KL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from rama.circuits.ioi_prompts import ioi_prompts
from rama.errors import InputError
from rama.hooks.model import HookedModel
from rama.interventions.logit_metrics import logit_difference

BatchMetric = Callable[[torch.Tensor], torch.Tensor]  # logits [batch, pos, vocab] -> [batch]
# a user's metric: (logits [batch, pos, vocab], rows [batch] = indices into the prompt lists) -> [batch]
PromptMetric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TaskBatch:
    clean: torch.Tensor  # [batch, pos]
    corrupted: torch.Tensor  # [batch, pos]
    metric: BatchMetric
    positions: torch.Tensor  # [batch] or [batch, k]: the position(s) each prompt's metric reads

    def __post_init__(self) -> None:
        if self.clean.shape != self.corrupted.shape:
            raise InputError(
                f"clean and corrupted batches must line up token by token; got {tuple(self.clean.shape)} "
                f"and {tuple(self.corrupted.shape)}"
            )


@dataclass(frozen=True)
class CircuitTask:
    name: str
    batches: list[TaskBatch]

    def __post_init__(self) -> None:
        if not self.batches:
            raise InputError(f"task {self.name!r} has no prompts")

    @property
    def n_prompts(self) -> int:
        return sum(b.clean.shape[0] for b in self.batches)


def task_from_prompts(
    model: HookedModel,
    clean: Sequence[str],
    corrupted: Sequence[str],
    metric: PromptMetric,
    name: str = "custom",
    batch_size: int = 16,
) -> CircuitTask:
    """A user task from two prompt lists (pair i = `clean[i]`, `corrupted[i]`) and a metric.

    Pairs are grouped by token length into batches of at most `batch_size`; the metric reads the
    last position unless it indexes the logits itself."""
    if len(clean) != len(corrupted) or not clean:
        raise InputError(
            f"give as many corrupted prompts as clean ones (one twin each); got {len(clean)} and {len(corrupted)}"
        )
    tokens = [(model.to_tokens(c)[0], model.to_tokens(k)[0]) for c, k in zip(clean, corrupted, strict=True)]
    for i, (c, k) in enumerate(tokens):
        if c.shape != k.shape:
            raise InputError(
                f"pair {i} tokenizes to {c.shape[0]} and {k.shape[0]} tokens ({clean[i]!r} / {corrupted[i]!r}); "
                "edge patching aligns them position by position: choose words with the same token count "
                "(e.g. other single-token names) or pad the shorter prompt"
            )
    by_length: dict[int, list[int]] = {}
    for i, (c, _) in enumerate(tokens):
        by_length.setdefault(c.shape[0], []).append(i)
    batches = []
    for length, rows in sorted(by_length.items()):
        for start in range(0, len(rows), batch_size):
            chunk = torch.tensor(rows[start : start + batch_size])
            batches.append(
                TaskBatch(
                    torch.stack([tokens[i][0] for i in chunk.tolist()]),
                    torch.stack([tokens[i][1] for i in chunk.tolist()]),
                    _bind(metric, chunk),
                    torch.full((len(chunk),), length - 1),
                )
            )
    return CircuitTask(name, batches)


def _bind(metric: PromptMetric, rows: torch.Tensor) -> BatchMetric:
    return lambda logits: metric(logits, rows)


def logit_difference_metric(
    correct: torch.Tensor, wrong: torch.Tensor, positions: torch.Tensor
) -> BatchMetric:
    """logit(correct) − logit(wrong) at `positions`, each `[batch]`."""
    return lambda logits: logit_difference(logits, correct, wrong, positions)


def induction_task(
    model: HookedModel, n: int = 32, half: int = 10, seed: int = 0, batch_size: int = 16
) -> CircuitTask:
    """Repeated random tokens `BOS A A` (clean) against `BOS B C` (corrupted: fresh random tokens,
    nothing repeats); the metric is the mean log-probability of the second copy's tokens, which only
    an induction mechanism can predict. Corrupting both halves lets every part of the circuit show:
    the query side (the current token), the key side (the previous-token head's output) and the
    value side (the token to copy)."""
    if half < 2 or n < 1:
        raise InputError(f"the induction task needs half ≥ 2 and n ≥ 1; got half={half}, n={n}")
    generator = torch.Generator().manual_seed(seed)
    vocab = min(model.cfg.d_vocab, getattr(model.tokenizer, "vocab_size", model.cfg.d_vocab))
    low = 4 if vocab < 1000 else 100  # skip a toy's special tokens, a BPE's rare control tokens
    first = torch.randint(low, vocab, (n, half), generator=generator)
    other = torch.randint(low, vocab, (n, 2 * half), generator=generator)
    bos = torch.full((n, 1), _bos_id(model))
    clean = torch.cat([bos, first, first], 1)
    corrupted = torch.cat([bos, other], 1)
    positions = torch.arange(half, 2 * half).expand(n, half)  # where the second copy is predicted
    batches = []
    for start in range(0, n, batch_size):
        rows = slice(start, start + batch_size)
        batches.append(
            TaskBatch(
                clean[rows],
                corrupted[rows],
                _repeat_logprob(clean[rows], half),
                positions[rows],
            )
        )
    return CircuitTask("induction", batches)


def _bos_id(model: HookedModel) -> int:
    bos = getattr(model.tokenizer, "bos_token_id", None)
    if bos is None:
        raise InputError("the induction task starts each sequence with BOS; this tokenizer has none")
    return int(bos)


def _repeat_logprob(tokens: torch.Tensor, half: int) -> BatchMetric:
    """Mean log-probability of each second-copy token given what precedes it: `[batch]`."""
    targets = tokens[:, half + 1 :]  # [batch, half]: the second copy

    def metric(logits: torch.Tensor) -> torch.Tensor:
        predicted = logits[:, half : 2 * half].float().log_softmax(-1)  # predicts positions half+1 … 2·half
        return predicted.gather(-1, targets[..., None])[..., 0].mean(-1)

    return metric


def ioi_task(
    model: HookedModel,
    n: int = 64,
    seed: int = 0,
    batch_size: int = 16,
    template_set: str | Sequence[str] = "real",
) -> CircuitTask:
    """Indirect object identification: generator prompts (ABBA and BABA) against their ABC
    corruptions; the metric is logit(IO) − logit(S) at the end (`rama.circuits.ioi_prompts`)."""
    batches = []
    for group in ioi_prompts(model.tokenizer, n, seed, template_set=template_set):
        for start in range(0, group.clean.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            io, s, end = group.io[rows], group.s[rows], group.end[rows]
            batches.append(
                TaskBatch(group.clean[rows], group.corrupted[rows], logit_difference_metric(io, s, end), end)
            )
    return CircuitTask("ioi", batches)


TASKS: dict[str, Callable[..., CircuitTask]] = {"ioi": ioi_task, "induction": induction_task}
