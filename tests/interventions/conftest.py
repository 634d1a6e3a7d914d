from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import rama
from rama.toys import load_ground_truth, pretrained
from rama.toys.ioi import IOITask


@dataclass
class IOIPair:
    """Clean IOI prompts of one template and the same prompts with S2 replaced by the IO name, which
    flips the answer. Only the S2 position differs, so where the information flows is known."""

    model: rama.HookedModel
    clean: torch.Tensor  # [batch, pos] (without the answer)
    corrupted: torch.Tensor
    io: torch.Tensor  # [batch] token ids
    s: torch.Tensor
    s2: int  # the S2 position
    end: int
    truth: dict

    def metric(self, logits: torch.Tensor) -> torch.Tensor:
        """Mean logit(IO) − logit(S) at END: positive on clean, negative on corrupted."""
        at = logits[:, self.end]
        rows = torch.arange(at.shape[0])
        return (at[rows, self.io] - at[rows, self.s]).mean()


@pytest.fixture(scope="session")
def ioi_toy() -> rama.HookedModel:
    return rama.load(pretrained("ioi"))


@pytest.fixture(scope="session")
def ioi_pair(ioi_toy: rama.HookedModel) -> IOIPair:
    task = IOITask()
    prompts = [p for p in task.prompts(400, "test", torch.Generator().manual_seed(3)) if p.template == 0][:24]
    tokenizer = ioi_toy.tokenizer
    tokens, _ = task.encode(prompts, tokenizer)
    clean = tokens[:, :-1]  # drop the answer
    s2, end = prompts[0].positions["S2"], prompts[0].positions["END"]
    corrupted = clean.clone()
    io = torch.tensor(tokenizer.convert_tokens_to_ids([p.io for p in prompts]))
    s = torch.tensor(tokenizer.convert_tokens_to_ids([p.s for p in prompts]))
    corrupted[:, s2] = io
    return IOIPair(ioi_toy, clean, corrupted, io, s, s2, end, load_ground_truth(pretrained("ioi")))
