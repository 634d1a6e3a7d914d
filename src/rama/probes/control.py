"""The control set: ordinary sentences from the built-in corpus, on which a probe's alarm threshold is
set at a fixed false-positive rate (ordinary text should not raise a lie alarm)."""

from __future__ import annotations

import re
from pathlib import Path

from rama.data import iter_documents
from rama.errors import InputError

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
PER_DOCUMENT = 2  # sentences taken from one document, so the set spans many books
MIN_CHARS, MAX_CHARS = 30, 200


def control_sentences(count: int = 500, seed: int = 0, corpus: str | Path | None = None) -> list[str]:
    """`count` sentences of 30–200 characters, at most two per document, documents in a seeded order."""
    sentences: list[str] = []
    for document in iter_documents(corpus, shuffle_seed=seed):
        taken = 0
        for sentence in SENTENCE_END.split(" ".join(document.split())):
            if MIN_CHARS <= len(sentence) <= MAX_CHARS and sentence[0].isupper():
                sentences.append(sentence)
                taken += 1
                if taken == PER_DOCUMENT or len(sentences) == count:
                    break
        if len(sentences) == count:
            return sentences
    if not sentences:
        raise InputError("the control corpus gave no sentence of 30-200 characters")
    return sentences
