"""How good is an explanation? delphi's detection protocol, offline, with MiniLM as the judge.

An explanation of a unit should pick out the contexts the unit fires on from contexts it does not fire
on. Each context window is scored by the MiniLM cosine between the explanation and the window's text;
the explanation's score is the AUROC of the unit's activating windows against as many non-activating
ones (0.5: no better than chance, 1: every activating window ranks above every other).

- Activating: the unit's top examples and quantile samples (one window per token).
- Non-activating: windows of other units' examples of the same kind (top and quantile) drawn one at a
  time, uniformly without replacement, by Python's `random.Random` seeded with "SEED:KIND:UNIT", keeping
  those that contain none of the unit's known firing tokens (its example tokens and every token of its
  own windows where it is above 0), until there are as many as activating windows. The store does not
  hold the unit's activation everywhere, so a kept window can still hold a token where the unit fires,
  weakly: at density d, each token does with a chance of about d (docs/features.md).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone

import torch
from tqdm import tqdm

from rama.activations.sentence_embeddings import SentenceEmbedder, sentence_embedder
from rama.errors import InputError
from rama.features.monosemanticity import Window, unit_windows
from rama.features.store import FeatureStore
from rama.metrics import auroc

DETECTION_SCORER = "detection-minilm"
LABEL_SOURCE = "human-label"  # human labels are scored as explanations from this source


@dataclass(frozen=True)
class DetectionScore:
    kind: str
    id: int
    auroc: float
    activating: int
    non_activating: int


class DetectionScorer:
    """The windows of every unit of one kind in a store, and the embeddings computed so far (each window
    is embedded once, however many units draw it)."""

    def __init__(
        self,
        store: FeatureStore,
        kind: str = "latent",
        embedder: SentenceEmbedder | None = None,
        seed: int = 0,
    ) -> None:
        self.kind, self.seed = kind, seed
        self.embedder = embedder or sentence_embedder()
        self.activating = unit_windows(store, kind, samples=("top", "quantile"))
        pool = {w.token_index: w for windows in self.activating.values() for w in windows}
        self.pool = [pool[t] for t in sorted(pool)]
        self.vectors: dict[int, torch.Tensor] = {}  # token index → unit vector [d]

    def non_activating(self, id: int, count: int) -> list[Window]:
        """`count` windows (fewer if the pool runs out) with none of unit `id`'s known firing tokens."""
        firing = {t for w in self.activating[id] for t in (w.token_index, *w.firing)}
        rng = random.Random(f"{self.seed}:{self.kind}:{id}")
        seen: set[int] = set()
        chosen: list[Window] = []
        while len(chosen) < count and len(seen) < len(self.pool):
            index = rng.randrange(len(self.pool))  # one at a time, without replacement
            if index in seen:
                continue
            seen.add(index)
            window = self.pool[index]
            if not any(t in firing for t in range(window.start, window.stop)):
                chosen.append(window)
        return chosen

    def embed(self, windows: list[Window], query: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit vectors of the windows `[len(windows), d]` (only those not embedded before are computed,
        in one batch with the query) and of the query `[d]`."""
        new = sorted({w.token_index: w.text for w in windows if w.token_index not in self.vectors}.items())
        vectors = self.embedder([text for _, text in new] + [query])  # [new + 1, d]
        for (token_index, _), vector in zip(new, vectors[:-1], strict=True):
            self.vectors[token_index] = vector
        return torch.stack([self.vectors[w.token_index] for w in windows]), vectors[-1]

    def score(self, id: int, explanation: str) -> DetectionScore:
        """The AUROC of `explanation` at telling unit `id`'s activating windows from non-activating ones."""
        if id not in self.activating:
            raise InputError(f"no {self.kind} {id} in this store")
        positives = self.activating[id]
        if not positives:
            raise InputError(f"{self.kind} {id} never fired in the analysed tokens: nothing to detect")
        negatives = self.non_activating(id, len(positives))
        if not negatives:
            raise InputError(f"no window in the store is free of {self.kind} {id}'s firing tokens")
        windows, query = self.embed(positives + negatives, explanation)
        similarity = windows @ query  # [windows]
        value = auroc(similarity[: len(positives)], similarity[len(positives) :])
        return DetectionScore(self.kind, id, value, len(positives), len(negatives))


def score_explanations(
    store: FeatureStore,
    source: str,
    kind: str = "latent",
    embedder: SentenceEmbedder | None = None,
    seed: int = 0,
    progress: bool = True,
) -> list[DetectionScore]:
    """Score every explanation `source` gave a unit of `kind`; each score is saved in the store (opened
    `writable`) under the scorer `detection-minilm`. Units that never fired are skipped."""
    ids = sorted(store.explained(source, kind))
    if not ids:
        raise InputError(f"{str(store.path)!r} holds no {kind} explanations from {source!r}")
    scorer = DetectionScorer(store, kind, embedder, seed)
    scores = []
    for id in tqdm(ids, desc=f"scoring {source}", unit=kind, disable=not progress):
        text = next(e["text"] for e in store.explanations(id, kind) if e["source"] == source)
        if not scorer.activating.get(id):
            continue
        result = scorer.score(id, text)
        store.set_explanation_score(id, source, result.auroc, DETECTION_SCORER, kind)
        scores.append(result)
    return scores


def copy_labels(store: FeatureStore, kind: str = "latent") -> int:
    """Copy every non-empty human label into the explanations as source `human-label` (so its score is
    kept beside its text); returns how many."""
    rows = [r for r in store.units_page(kind, limit=max(1, store.count(kind))) if r["label"].strip()]
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for row in rows:
        store.set_explanation(row["id"], LABEL_SOURCE, row["label"], created, kind=kind)
    return len(rows)
