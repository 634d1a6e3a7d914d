"""Detection scoring of explanations on a handmade store whose latents each fire on one topic: the draw
of non-activating windows follows its rule, the AUROC equals one computed by hand from the same
similarities, and an explanation that names the topic beats an unrelated one."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_monosemanticity import COOKING, MONEY, SEA, Example, handmade_store, spaced

from rama.activations.sentence_embeddings import sentence_embedder
from rama.errors import InputError
from rama.features.detection_scoring import (
    DETECTION_SCORER,
    LABEL_SOURCE,
    DetectionScorer,
    copy_labels,
    score_explanations,
)
from rama.features.store import FeatureStore

pytestmark = pytest.mark.slow  # loads MiniLM

# tokens 1005-1011: holds latent 0's example token 1010 (the last of SEA[0]'s 11 words)
OVERLAPPING = Example("Rates rose and the harbour fees doubled", start=1005)


def topical_store(path: Path) -> Path:
    tops = {
        ("latent", 0): spaced(SEA[:4], 1000),  # windows 1000-1011, 1100-1109, ...
        ("latent", 1): spaced(COOKING[:3], 2000),
        ("latent", 2): [*spaced(MONEY, 3000), OVERLAPPING],
        ("latent", 3): [],  # never fired
    }
    quantiles = {("latent", 0): spaced(SEA[4:], 1400), ("latent", 1): spaced(COOKING[3:], 2300)}
    return handmade_store(path, tops, quantiles, labels={1: "cooking and baking recipes"})


def test_non_activating_windows_follow_the_documented_rule(tmp_path: Path) -> None:
    with FeatureStore(topical_store(tmp_path / "t.db")) as store:
        scorer = DetectionScorer(store, embedder=sentence_embedder())
    assert [len(scorer.activating[i]) for i in range(4)] == [6, 4, 5, 0]  # top + quantile windows
    own = {w.token_index for w in scorer.activating[0]}
    drawn = scorer.non_activating(0, 6)
    assert len(drawn) == 6 and not own & {w.token_index for w in drawn}
    assert OVERLAPPING.start + len(OVERLAPPING.text.split()) - 1 not in {w.token_index for w in drawn}
    everything = scorer.non_activating(0, 100)  # the pool runs out: every window but its own and the overlap
    assert len(everything) == 4 + 5 - 1 + 0 and drawn == scorer.non_activating(0, 6)  # seeded: the same draw


def test_a_named_topic_scores_above_an_unrelated_explanation_and_scores_are_saved(tmp_path: Path) -> None:
    db = topical_store(tmp_path / "t.db")
    embed = sentence_embedder()
    with FeatureStore(db) as store:
        scorer = DetectionScorer(store, embedder=embed)
    right = scorer.score(0, "ships, sailors and the sea")
    wrong = scorer.score(0, "cooking and baking recipes")
    assert right.auroc > 0.9 and right.auroc - wrong.auroc > 0.4
    assert (right.activating, right.non_activating) == (6, 6)

    positives, negatives = scorer.activating[0], scorer.non_activating(0, 6)
    query = embed(["ships, sailors and the sea"])[0]
    pos = [float(v @ query) for v in embed([w.text for w in positives])]
    neg = [float(v @ query) for v in embed([w.text for w in negatives])]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    assert right.auroc == pytest.approx(wins / 36, abs=1e-6)  # every pair by hand
    with pytest.raises(InputError, match="latent 3 never fired"):
        scorer.score(3, "anything")

    with FeatureStore(db, writable=True) as store:
        store.set_explanation(0, "hand", "ships, sailors and the sea", "2026-11-30T00:00:00+00:00")
        store.set_explanation(1, "hand", "the stock market", "2026-11-30T00:00:00+00:00")
        store.set_explanation(3, "hand", "nothing", "2026-11-30T00:00:00+00:00")
        scores = score_explanations(store, "hand", embedder=embed, progress=False)
        assert [s.id for s in scores] == [0, 1]  # the dead latent is skipped
        saved = {i: store.explanations(i)[0] for i in (0, 1, 3)}
        assert saved[0]["score"] == pytest.approx(right.auroc) and saved[0]["scorer"] == DETECTION_SCORER
        assert saved[1]["score"] < 0.5 and saved[3]["score"] is None
        assert copy_labels(store) == 1
        [label] = score_explanations(store, LABEL_SOURCE, embedder=embed, progress=False)
        assert label.id == 1 and label.auroc > 0.9
        with pytest.raises(InputError, match="no latent explanations from 'nobody'"):
            score_explanations(store, "nobody", embedder=embed)
