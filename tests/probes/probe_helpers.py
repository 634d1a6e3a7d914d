"""Small labelled statement sets for the tiny word-level Llama of the feature tests: the label is carried
by the last word (w10 true, w20 false) after a random three-word prefix shared by the pair."""

from __future__ import annotations

import random

from rama.probes import ProbeDataset


def word_statements(groups: int = 30, seed: int = 0, name: str = "words", true_word: str = "w10",
                    false_word: str = "w20") -> ProbeDataset:  # fmt: skip
    rng = random.Random(seed)
    texts, labels, names = [], [], []
    for g in range(groups):
        prefix = " ".join(f"w{rng.randrange(30, 90)}" for _ in range(3))
        texts += [f"{prefix} {true_word}", f"{prefix} {false_word}"]
        labels += [1, 0]
        names += [f"{name}-{g}", f"{name}-{g}"]
    return ProbeDataset(name, tuple(texts), tuple(labels), tuple(names))


def control_words(count: int = 40, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(30, 90)}" for _ in range(5)) for _ in range(count)]
