"""IOI prompts: names where the positions say, single tokens in context, ABBA and BABA, ABC
corruptions of equal length, and clear errors for names a tokenizer splits."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import transformers as tf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import rama
from rama.circuits.ioi_prompts import (
    REAL_TEMPLATES,
    IOIPrompts,
    ioi_accuracy,
    ioi_logit_difference,
    ioi_prompts,
)
from rama.errors import InputError
from rama.toys import ioi as toy_ioi
from rama.toys import pretrained

COMMON = ["Mary", "John", "Alice", "Bob", "Sarah", "Tom", "Emma", "James"]


def toy_words() -> dict[str, Any]:
    return {
        "template_set": toy_ioi.TEMPLATES,
        "names": toy_ioi.NAMES,
        "places": toy_ioi.PLACES,
        "objects": toy_ioi.OBJECTS,
    }


def small_bpe() -> Any:
    """A real byte-level BPE (GPT-2 style, leading spaces attach to words) trained here on the
    built-in templates filled with COMMON names: those names become single tokens, rarer ones do not."""
    texts = [
        template.format(A=a, B=b, S=b, P=place, O=thing)
        for template in REAL_TEMPLATES
        for a, b in zip(COMMON, COMMON[1:] + COMMON[:1], strict=True)
        for place, thing in [("store", "book"), ("park", "drink"), ("school", "ball"), ("office", "key")]
    ]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts * 3, trainer)
    return tf.PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def check_group(group: IOIPrompts, tokenizer: Any, bos: int | None) -> None:
    """Every recorded position holds what it names, in the clean and the ABC prompt."""

    def decode(token: torch.Tensor) -> str:
        return str(tokenizer.decode([int(token)]))

    assert group.clean.shape == group.corrupted.shape and group.clean.ndim == 2
    if bos is not None:
        assert (group.clean[:, 0] == bos).all() and (group.corrupted[:, 0] == bos).all()
    for i, text in enumerate(group.texts):
        words = text.replace(",", " ").replace(".", " ").split()
        at = {key: decode(group.clean[i, int(group.positions[key][i])]).strip() for key in ("IO", "S1", "S2")}
        assert at["S1"] == at["S2"] != at["IO"] and words.count(at["S1"]) == 2 and words.count(at["IO"]) == 1
        assert decode(group.io[i]).strip() == at["IO"] and decode(group.s[i]).strip() == at["S1"]
        assert int(group.positions["S1+1"][i]) == int(group.positions["S1"][i]) + 1
        assert int(group.end[i]) == int(group.positions["END"][i]) == group.clean.shape[1] - 1
        first = "IO" if group.orders[i] == "ABBA" else "S1"
        assert int(group.positions[first][i]) < int(group.positions["S2"][i])
        abc = [decode(group.corrupted[i, int(group.positions[key][i])]).strip() for key in ("IO", "S1", "S2")]
        assert len(set(abc)) == 3 and not set(abc) & {at["IO"], at["S1"]}  # three new, distinct names
        differs = (group.clean[i] != group.corrupted[i]).nonzero().flatten().tolist()
        assert sorted(differs) == sorted(int(group.positions[k][i]) for k in ("IO", "S1", "S2"))
        assert tokenizer.decode(group.clean[i, 1 if bos is not None else 0 :].tolist()).strip() == text


def test_toy_words_give_prompts_the_toy_reads() -> None:
    tokenizer = rama.load(pretrained("ioi")).tokenizer
    groups = ioi_prompts(tokenizer, 36, seed=1, **toy_words())
    assert len(groups) == len(toy_ioi.TEMPLATES) and [len(g) for g in groups] == [6] * 6
    for index, group in enumerate(groups):
        check_group(group, tokenizer, bos=tokenizer.bos_token_id)
        assert (group.templates == index).all()
        assert set(group.orders) == {"ABBA", "BABA"}
    # the toy's own prompt for the same words tokenizes identically
    first = groups[0]
    words = ["<bos>", *first.texts[0].split()]
    assert first.clean[0].tolist() == tokenizer.convert_tokens_to_ids(words)


def test_a_bpe_tokenizer_keeps_leading_space_names_and_warns_about_the_others() -> None:
    tokenizer = small_bpe()
    assert len(tokenizer(" Mary", add_special_tokens=False)["input_ids"]) == 1
    assert len(tokenizer(" Bartholomew", add_special_tokens=False)["input_ids"]) > 1
    names = [*COMMON, "Bartholomew", "Xanthippe"]
    with pytest.warns(UserWarning, match=r"dropped 2 names.*Bartholomew.*Xanthippe"):
        groups = ioi_prompts(tokenizer, 20, names=names, places=["store", "park"], objects=["book", "drink"])
    assert sum(len(g) for g in groups) == 20 and len(groups) == 10
    for group in groups:
        check_group(group, tokenizer, bos=None)
        assert not any("Bartholomew" in t or "Xanthippe" in t for t in group.texts)


def test_too_few_single_token_names_is_an_error_naming_them() -> None:
    tokenizer = small_bpe()
    with pytest.raises(InputError, match=r"at least 5 names.*Bartholomew.*' Bartholomew' →"):
        ioi_prompts(tokenizer, 4, names=["Mary", "John", "Bartholomew", "Xanthippe", "Alice"])
    characters = Tokenizer(
        models.WordPiece({"[UNK]": 0, **{c: i + 1 for i, c in enumerate("abcdefghij")}}, unk_token="[UNK]")
    )
    characters.pre_tokenizer = pre_tokenizers.Whitespace()
    no_words = tf.PreTrainedTokenizerFast(tokenizer_object=characters, unk_token="[UNK]")
    with pytest.raises(InputError, match="only 0 of"):
        ioi_prompts(no_words, 4)


def test_bad_templates_and_settings_are_refused() -> None:
    tokenizer = rama.load(pretrained("ioi")).tokenizer
    words = toy_words()
    with pytest.raises(InputError, match=r"\{A\}, \{B\} and \{S\} once"):
        ioi_prompts(tokenizer, 4, **{**words, "template_set": ["When {A} and {B} went , {A} gave it to"]})
    with pytest.raises(InputError, match="must come after"):
        ioi_prompts(tokenizer, 4, **{**words, "template_set": ["{S} and {A} and {B} gave it to"]})
    with pytest.raises(InputError, match="orders"):
        ioi_prompts(tokenizer, 4, orders=("AABB",), **words)
    with pytest.raises(InputError, match="at least one"):
        ioi_prompts(tokenizer, 0, **words)


def test_logit_difference_and_accuracy_by_hand() -> None:
    tokenizer = rama.load(pretrained("ioi")).tokenizer
    [group] = ioi_prompts(tokenizer, 2, n_templates=1, **toy_words())
    logits = torch.zeros(2, group.clean.shape[1], len(tokenizer))
    end = int(group.end[0])
    logits[0, end, group.io[0]], logits[0, end, group.s[0]] = 2.5, -1.0  # IO on top: +3.5
    logits[1, end, group.io[1]], logits[1, end, group.s[1]], logits[1, end, 0] = 1.0, 1.5, 9.0  # S above IO
    logits[0, end - 1, group.s[0]] = 50.0  # another position is not read
    assert ioi_logit_difference(logits, group).tolist() == [3.5, -0.5]
    assert ioi_accuracy(logits, group) == (0.5, 0.5)


@pytest.mark.slow
def test_smollm2s_tokenizer_keeps_every_built_in_word_whole(smollm: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no built-in name, place or object is dropped for SmolLM2
        groups = ioi_prompts(smollm.tokenizer, 20)
    assert len(groups) == len(REAL_TEMPLATES)
    for group in groups:
        check_group(group, smollm.tokenizer, bos=None)  # SmolLM2's tokenizer adds no BOS
        assert smollm.tokenizer.decode([int(group.io[0])]).startswith(" ")  # the answer with its space
