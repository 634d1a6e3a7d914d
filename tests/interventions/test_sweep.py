"""The keyword scorer (its whole definition is the keyword list, so its matching rules are pinned here) and
the ranking of steering candidates by their measured outcome."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rama
from rama.interventions import add_vector
from rama.interventions.sweep import SweepPoint, SweepResult, keyword_scorer, rank_by_steering
from rama.toys import pretrained


def test_keywords_match_whole_words_unless_starred() -> None:
    scorer = keyword_scorer(["sea", "ship*", "war"])
    texts = [
        "The season was warm.",  # neither 'sea' nor 'war' as words
        "Out on the Sea, at last.",  # whole word, any case
        "Two shipwrecks and a ship's bell.",  # the prefix
        "The war's end",  # a word followed by punctuation
        "research and warfare",  # inside or before other letters: not a match
    ]
    assert scorer(texts) == [False, True, True, True, False]


def test_phrases_match_with_their_spaces() -> None:
    scorer = keyword_scorer(["outer space", "harbo*"])
    assert scorer(["into outer space", "a space outside", "the harbour", "harbor lights"]) == [
        True,
        False,
        True,
        True,
    ]


@pytest.mark.parametrize("words", [[], [" ", ""], ["s*a"], ["*"]])
def test_empty_or_misplaced_star_is_refused(words: list[str]) -> None:
    with pytest.raises(ValueError, match="keyword"):
        keyword_scorer(words)


def test_best_is_the_highest_rate_under_twice_the_unsteered_perplexity_ties_to_the_more_fluent(
    tmp_path: Path,
) -> None:
    points = [
        SweepPoint(0.0, 0.0, 3.0),
        SweepPoint(10.0, 0.5, 5.5),
        SweepPoint(20.0, 0.5, 4.0),  # the same rate as 10, more fluent
        SweepPoint(30.0, 0.9, 6.0),  # exactly 2 × 3.0: not under the limit
        SweepPoint(40.0, 1.0, 9.0),
    ]
    result = SweepResult(points, "keywords: sea", "blocks.0.hook_resid_post")
    assert result.baseline().strength == 0.0
    best = result.best(2.0)
    assert best is not None and best.strength == 20.0
    assert result.best(3.5) is points[4]  # 9.0 < 10.5
    assert result.best(1.0) is None  # strictly under the limit: not even the baseline is
    result.save(tmp_path / "sweep.json")
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["scorer"] == "keywords: sea"
    assert [p["strength"] for p in saved["points"]] == [0, 10, 20, 30, 40]
    assert [f.name for f in tmp_path.iterdir()] == ["sweep.json"]  # no staging file left


def test_rank_by_steering_orders_by_concept_rate_under_the_perplexity_limit() -> None:
    model = rama.load(pretrained("ioi"))
    prompt = "When Mary and John went to the store , John gave a drink to"
    prompts = [prompt, prompt.replace("Mary", "Kate")]
    unembed = {
        name: model.W_U[:, model.tokenizer.convert_tokens_to_ids(name)].detach() for name in ("John", "Mary")
    }
    candidates = {
        name: (lambda strength, v=v: [add_vector(model, "blocks.2.hook_resid_post", v, strength)])
        for name, v in unembed.items()
    }
    scorer = keyword_scorer(["John"])
    free = rank_by_steering(model, candidates, prompts, [20.0], scorer, float("inf"), max_new_tokens=1)
    assert [name for name, _ in free] == ["John", "Mary"]
    assert free[0][1] is not None and free[0][1].concept_rate == 1.0  # both continuations say John
    assert free[1][1] is not None and free[1][1].concept_rate == 0.0
    # John is unlikely to the unsteered model: with almost no room for perplexity to rise, it never
    # qualifies, while Mary (what the model says anyway) keeps the unsteered perplexity
    strict = rank_by_steering(model, candidates, prompts, [20.0], scorer, 1.01, max_new_tokens=1)
    assert [name for name, _ in strict] == ["Mary", "John"] and strict[1][1] is None
    with pytest.raises(ValueError, match="non-zero strength"):
        rank_by_steering(model, candidates, prompts, [0.0], scorer)
