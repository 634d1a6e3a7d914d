"""`pair_preference` against a hand computation: each statement run alone (no padding), log-probabilities
summed from the first token where a pair's statements differ."""

from __future__ import annotations

import random

import pytest
import torch

from features.feature_helpers import tiny_model
from rama.errors import InputError
from rama.hooks.model import HookedModel
from rama.probes import ProbeDataset
from rama.probes.knowledge import pair_preference


def alone(model: HookedModel, text: str) -> tuple[list[int], torch.Tensor]:
    ids = model.to_tokens(text)[0]
    with torch.no_grad():
        logprobs = model(ids[None]).float().log_softmax(-1)[0]
    return ids.tolist(), logprobs[:-1].gather(1, ids[1:, None])[:, 0].double()


def test_pair_preference_by_hand() -> None:
    model = tiny_model()
    # prefixes of 1 to 4 words, so every batch is padded; the two statements of a pair differ in the last word
    rng = random.Random(3)
    prefixes = [" ".join(f"w{rng.randrange(30, 90)}" for _ in range(1 + g % 4)) for g in range(16)]
    texts = [f"{p} {w}" for p in prefixes for w in ("w10 w40", "w20 w41")]
    dataset = ProbeDataset("mixed", tuple(texts), (1, 0) * 16, tuple(p for p in prefixes for _ in range(2)))
    true_ids, false_ids = dataset.pairs()
    right = 0
    for t, f in zip(true_ids, false_ids, strict=True):
        (a, a_lp), (b, b_lp) = alone(model, dataset.texts[t]), alone(model, dataset.texts[f])
        shared = next(i for i in range(min(len(a), len(b))) if a[i] != b[i])
        right += int(a_lp[shared - 1 :].sum() > b_lp[shared - 1 :].sum())
    expected = right / len(true_ids)
    assert 0 < expected < 1  # both outcomes occur, so the comparison is not trivially all or none
    assert pair_preference(model, dataset, batch_size=5) == pytest.approx(expected)
    with pytest.raises(InputError, match="no group with one true and one false"):
        pair_preference(model, ProbeDataset("one", ("w1 w2",), (1,), ("g",)))
