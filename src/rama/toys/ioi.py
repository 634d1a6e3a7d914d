"""Indirect object identification (Wang et al. 2022) as a synthetic task a small transformer learns.

"When Mary and John went to the store , John gave a drink to" → Mary: the answer is the name that
appears once. Name pairs are split into train and test, so the accuracy is on pairs never seen.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import torch

from rama.errors import ConfigError
from rama.toys.toy_transformer import Batch

NAMES = [
    "Mary",
    "John",
    "Alice",
    "Bob",
    "Sarah",
    "Tom",
    "Emma",
    "James",
    "Anna",
    "David",
    "Lucy",
    "Mark",
    "Kate",
    "Paul",
    "Jane",
    "Peter",
    "Rose",
    "Sam",
    "Clara",
    "Jack",
]
PLACES = ["store", "garden", "school", "park", "station", "office", "market", "library", "beach", "river"]
OBJECTS = ["drink", "book", "ball", "key", "letter", "gift", "flower", "bag", "ring", "coin"]
# {A} {B}: the two names in order; {S}: the repeated subject; the prompt ends where the answer goes.
TEMPLATES = (
    "When {A} and {B} went to the {P} , {S} gave a {O} to",
    "After {A} and {B} went to the {P} , {S} handed a {O} to",
    "Then , {A} and {B} were working at the {P} . {S} decided to give a {O} to",
    "While {A} and {B} were at the {P} , {S} gave a {O} to",
    "{A} and {B} found a {O} at the {P} . {S} gave it to",
    "Friends {A} and {B} went to the {P} . {S} brought a {O} to",
)


@dataclass(frozen=True)
class IOIPrompt:
    text: str
    io: str  # the indirect object: the answer
    s: str  # the subject, named twice
    template: int
    positions: dict[str, int] = field(default_factory=dict)  # token positions (with <bos> at 0)


@dataclass(frozen=True)
class IOITask:
    test_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"test_fraction must lie in (0, 1); got {self.test_fraction}")

    @property
    def words(self) -> list[str]:
        template_words = {w for t in TEMPLATES for w in t.split() if not w.startswith("{")}
        return sorted(template_words) + list(NAMES) + list(PLACES) + list(OBJECTS)

    def name_pairs(self, split: str) -> list[tuple[str, str]]:
        """Unordered name pairs of a split ("train" or "test"), fixed by the task's seed."""
        if split not in ("train", "test"):
            raise ConfigError(f"split must be 'train' or 'test'; got {split!r}")
        pairs = list(itertools.combinations(NAMES, 2))
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(self.seed)).tolist()
        n_test = round(len(pairs) * self.test_fraction)
        chosen = order[:n_test] if split == "test" else order[n_test:]
        return [pairs[i] for i in chosen]

    def prompts(self, n: int, split: str, generator: torch.Generator) -> list[IOIPrompt]:
        pairs = self.name_pairs(split)
        draws = torch.randint(0, 1 << 30, (n, 6), generator=generator).tolist()
        return [self._prompt(pairs, draw) for draw in draws]

    def _prompt(self, pairs: list[tuple[str, str]], draw: list[int]) -> IOIPrompt:
        first, second = pairs[draw[0] % len(pairs)]
        if draw[1] % 2:
            first, second = second, first
        s, io = (first, second) if draw[2] % 2 else (second, first)
        template = draw[3] % len(TEMPLATES)
        values = {"A": first, "B": second, "S": s, "P": PLACES[draw[4] % len(PLACES)]}
        values["O"] = OBJECTS[draw[5] % len(OBJECTS)]
        text = TEMPLATES[template].format(**values)
        words = text.split()
        positions = {
            "IO": 1 + words.index(io),
            "S1": 1 + words.index(s),
            "S2": 1 + len(words) - 1 - words[::-1].index(s),
            "END": len(words),
        }
        return IOIPrompt(text, io, s, template, positions)

    def encode(self, prompts: list[IOIPrompt], tokenizer: Any) -> Batch:
        """(tokens `[n, 1 + longest + 1]`: <bos>, prompt, answer, right-padded; mask on the answer)."""
        rows = [tokenizer.convert_tokens_to_ids(["<bos>", *p.text.split(), p.io]) for p in prompts]
        width = max(len(r) for r in rows)
        tokens = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = torch.tensor(row)
            mask[i, len(row) - 1] = True
        return tokens, mask


def logit_difference(logits: torch.Tensor, prompts: list[IOIPrompt], tokenizer: Any) -> torch.Tensor:
    """`[n]`: logit(IO) − logit(S) at the last prompt position (END)."""
    io = torch.tensor(tokenizer.convert_tokens_to_ids([p.io for p in prompts]))
    s = torch.tensor(tokenizer.convert_tokens_to_ids([p.s for p in prompts]))
    end = torch.tensor([p.positions["END"] for p in prompts])
    rows = torch.arange(len(prompts))
    return logits[rows, end, io] - logits[rows, end, s]


def accuracy(model: Any, tokenizer: Any, prompts: list[IOIPrompt], task: IOITask) -> float:
    """Share of prompts whose top next-token prediction at END is the indirect object."""
    tokens, _ = task.encode(prompts, tokenizer)
    with torch.no_grad():
        logits = model(input_ids=tokens, attention_mask=(tokens != 0).long()).logits  # right padding
    end = torch.tensor([p.positions["END"] for p in prompts])
    predicted = logits[torch.arange(len(prompts)), end].argmax(-1)
    answers = torch.tensor(tokenizer.convert_tokens_to_ids([p.io for p in prompts]))
    return float((predicted == answers).float().mean())
