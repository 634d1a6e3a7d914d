"""The keyword scorer: its whole definition is the keyword list, so its matching rules are pinned here."""

from __future__ import annotations

import pytest

from rama.interventions.sweep import keyword_scorer


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
