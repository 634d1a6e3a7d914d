"""Features vs neurons: token concentration, context coherence and its random baseline, each against a
hand computation; the store-level comparison on a handmade store (real SQLite, written by rama's own
`creating`) whose units' examples are chosen by hand."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import pytest
import torch

from rama.activations.sentence_embeddings import sentence_embedder
from rama.features.monosemanticity import (
    CompareConfig,
    compare_units,
    comparison_table,
    mean_pairwise_cosine,
    plot_comparison,
    random_set_coherence,
    token_concentration,
    window_text,
)
from rama.features.store import FeatureStore, creating, write_meta

SEA = [
    "The sailors hauled the ropes as the ship left the harbour",
    "Waves crashed against the hull of the old fishing boat",
    "The captain steered the vessel through the stormy sea",
    "Fishermen cast their nets from the deck at dawn",
    "The ferry crossed the channel to the island port",
    "A lighthouse warned the ships away from the rocks",
]
COOKING = [
    "Whisk the eggs with sugar and melted butter",
    "Bake the bread in a hot oven for forty minutes",
    "Chop the onions and fry them gently in olive oil",
    "Season the soup with salt, pepper and fresh herbs",
]
MONEY = [
    "The bank raised its interest rates again this quarter",
    "Investors sold their shares as the stock market fell",
    "She paid back the loan from her monthly salary",
    "The company reported record profits to its shareholders",
]


@dataclass(frozen=True)
class Example:
    """A handmade example: its words are its tokens (" word"); it sits at global index `start`."""

    text: str
    start: int
    focus: int = -1  # which word is the example's token (default: the last)
    activation: float = 1.0


def example_row(
    kind: str, unit: int, sample: str, rank: int, example: Example, vocabulary: dict[str, int]
) -> tuple:
    tokens = [" " + word for word in example.text.split()]
    focus = example.focus % len(tokens)
    ids = [vocabulary.setdefault(token, len(vocabulary)) for token in tokens]
    acts = [example.activation if i == focus else 0.0 for i in range(len(tokens))]
    return (kind, unit, sample, 0, rank, example.activation, example.start + focus, focus,
            json.dumps(ids), json.dumps(tokens), json.dumps(acts))  # fmt: skip


def handmade_store(path: Path, tops: dict[tuple[str, int], list[Example]],
                   quantiles: dict[tuple[str, int], list[Example]] | None = None,
                   labels: dict[int, str] | None = None) -> Path:  # fmt: skip
    """A feature store holding exactly these examples (a unit with none is dead)."""
    vocabulary: dict[str, int] = {}
    with creating(path) as connection:
        write_meta(connection, {"sae_fingerprint": "handmade", "d_sae": sum(k == "latent" for k, _ in tops)})
        for (kind, unit), examples in tops.items():
            label = (labels or {}).get(unit, "") if kind == "latent" else ""
            connection.execute("INSERT INTO units VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (kind, unit, 0.1, 1.0, 1.0, len(examples), label, "[]"))  # fmt: skip
            for sample, chosen in (("top", examples), ("quantile", (quantiles or {}).get((kind, unit), []))):
                rows = [example_row(kind, unit, sample, r, e, vocabulary) for r, e in enumerate(chosen)]
                connection.executemany("INSERT INTO examples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return path


def spaced(texts: list[str], first: int) -> list[Example]:
    """Examples 100 token indices apart from `first` on (so no two windows overlap)."""
    return [Example(text, first + 100 * i) for i, text in enumerate(texts)]


def test_token_concentration_and_entropy_by_hand() -> None:
    share, bits = token_concentration([5, 5, 5, 7])
    assert share == 0.75 and bits == pytest.approx(
        -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    )  # 0.811
    assert token_concentration([1, 2, 3, 4]) == (0.25, 2.0)
    assert token_concentration([9, 9, 9]) == (1.0, 0.0)


def test_mean_pairwise_cosine_and_random_sets_by_hand() -> None:
    vectors = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    # pairs: (0,1) 0, (0,2) 1/√2, (1,2) 1/√2
    assert mean_pairwise_cosine(vectors) == pytest.approx((0 + 2 / math.sqrt(2)) / 3)
    pool = torch.nn.functional.normalize(
        torch.randn(8, 5, generator=torch.Generator().manual_seed(1)), dim=-1
    )
    every_pair = [float(pool[i] @ pool[j]) for i, j in combinations(range(8), 2)]
    whole = random_set_coherence(pool, size=8, draws=3, seed=0)  # every draw is the whole pool
    torch.testing.assert_close(whole, torch.full((3,), sum(every_pair) / 28, dtype=torch.float64))
    draws = random_set_coherence(pool, size=3, draws=4000, seed=0)
    # a uniform 3-subset's mean pairwise cosine has the all-pairs mean as its expectation
    assert float(draws.mean()) == pytest.approx(sum(every_pair) / 28, abs=0.01)
    assert torch.equal(draws, random_set_coherence(pool, size=3, draws=4000, seed=0))


def test_window_text_leaves_out_special_token_markers() -> None:
    assert window_text(["<|im_start|>", "The", " ship", "<|endoftext|>", "</s>"]) == "The ship"


@pytest.mark.slow  # loads MiniLM
def test_compare_units_on_a_handmade_store(tmp_path: Path) -> None:
    cat = [Example("the black cat", 0), Example("a small cat", 100), Example("the old dog", 200)]
    tops = {
        ("latent", 0): spaced(SEA[:3], 1000),  # one topic, three different last words
        ("latent", 1): cat,  # two of three on " cat"
        ("latent", 2): [],  # dead
        ("latent", 3): spaced(SEA[3:5], 3000),  # rare: fewer than top_k
        ("neuron", 0): spaced([SEA[5], COOKING[0], MONEY[0]], 5000),  # three topics
        ("neuron", 1): spaced([COOKING[1], MONEY[1], "The old dog barked at the postman"], 6000),
    }
    db = handmade_store(tmp_path / "hand.db", tops)
    embed = sentence_embedder()
    config = CompareConfig(top_k=3, coherence_units=0, baseline_sets=4000, progress=False)
    with FeatureStore(db) as store:
        comparison = compare_units(store, embed, config)
    assert comparison.counts == {"latent": {"total": 4, "dead": 1, "rare": 1},
                                 "neuron": {"total": 2, "dead": 0, "rare": 0}}  # fmt: skip
    by_unit = {(u.kind, u.id): u for u in comparison.units}
    assert sorted(by_unit) == [("latent", 0), ("latent", 1), ("neuron", 0), ("neuron", 1)]
    cats = by_unit["latent", 1]
    assert cats.concentration == pytest.approx(2 / 3)
    assert cats.entropy_bits == pytest.approx(-(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3)))
    assert by_unit["latent", 0].concentration == pytest.approx(1 / 3)
    assert by_unit["latent", 0].entropy_bits == pytest.approx(math.log2(3))

    def by_hand(texts: list[str]) -> float:  # the mean of the three pairwise cosines, one by one
        e = embed(texts)
        return (float(e[0] @ e[1]) + float(e[0] @ e[2]) + float(e[1] @ e[2])) / 3

    assert by_unit["latent", 0].coherence == pytest.approx(by_hand(SEA[:3]), abs=1e-5)
    assert by_unit["neuron", 0].coherence == pytest.approx(by_hand([SEA[5], COOKING[0], MONEY[0]]), abs=1e-5)
    pool_texts = [e.text for key, examples in tops.items() if key != ("latent", 3) for e in examples]
    pool = embed(pool_texts)  # the 12 windows the measure embedded
    all_pairs = [float(pool[i] @ pool[j]) for i, j in combinations(range(12), 2)]
    base = comparison.baseline
    assert base is not None and base.pool == 12 and base.size == 3
    assert base.mean == pytest.approx(sum(all_pairs) / len(all_pairs), abs=0.01)
    # one topic coheres beyond random sets; three topics do not
    assert by_unit["latent", 0].coherence > base.threshold > by_unit["neuron", 0].coherence

    summary = comparison.summary()
    assert summary["latent"]["concentration_median"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert summary["latent"]["concentration_share"] == 0.5  # 2/3 ≥ 0.5, 1/3 not
    assert summary["latent"]["coherence_share"] == 1.0 and summary["neuron"]["coherence_share"] == 0.0
    table = comparison_table(comparison)
    assert "units (dead / rare, left out)" in table and "4 (1 / 1)" in table and "100.0%" in table
    assert json.loads(json.dumps(comparison.to_json()))["summary"]["latent"]["measured"] == 2
    figure = plot_comparison(comparison, tmp_path / "compare.png")
    assert figure.read_bytes().startswith(b"\x89PNG")
