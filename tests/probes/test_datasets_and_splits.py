"""Built-in statement sets, user files and group splits, and their refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rama.errors import InputError
from rama.probes import BUILTIN, ProbeDataset, load_dataset, split_by_group
from rama.probes.datasets import read_table


@pytest.mark.parametrize("name", list(BUILTIN))
def test_builtin_sets_are_balanced_pairs(name: str) -> None:
    dataset = load_dataset(name)
    true_ids, false_ids = dataset.pairs()
    assert len(true_ids) == len(set(dataset.groups)) == len(dataset) // 2  # one true, one false per group
    assert all(dataset.labels[i] == 1 for i in true_ids) and all(dataset.labels[i] == 0 for i in false_ids)
    assert len(set(dataset.texts)) == len(dataset)


def test_city_statements_follow_the_table() -> None:
    table = {row["city"]: row["country"] for row in read_table("cities")}
    dataset = load_dataset("cities", limit=50)
    assert len(dataset) == 100
    for text, label, city in zip(dataset.texts, dataset.labels, dataset.groups, strict=True):
        named = text.removeprefix(f"The city of {city} is in ").removesuffix(".")
        assert (named == table[city]) == bool(label)
    negated = load_dataset("neg_cities", limit=50)
    assert negated.texts[0] == dataset.texts[1].replace(" is in ", " is not in ")


def test_user_files(tmp_path: Path) -> None:
    rows = [
        {"text": f"statement {i}", "label": ["true", "false"][i % 2], "group": f"g{i // 2}"} for i in range(8)
    ]
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    csv = tmp_path / "mine.csv"
    csv.write_text("text,label\n" + "".join(f"statement {i},{1 - i % 2}\n" for i in range(8)))
    from_jsonl, from_csv = load_dataset(jsonl), load_dataset(csv)
    assert from_jsonl.labels == from_csv.labels == (1, 0) * 4
    assert from_jsonl.groups[:2] == ("g0", "g0") and from_csv.groups[:2] == ("row 2", "row 3")
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"text": "a"}) + "\n")
    with pytest.raises(InputError, match=r"line 1: the 'label' field is missing"):
        load_dataset(missing)
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\na,maybe\n")
    with pytest.raises(InputError, match="line 2: label 'maybe'"):
        load_dataset(bad)
    with pytest.raises(InputError, match="neither a built-in"):
        load_dataset("towns")


def test_splits_keep_groups_apart_and_agree_across_datasets() -> None:
    cities, negated = load_dataset("cities", limit=120), load_dataset("neg_cities", limit=120)
    split = split_by_group(cities, seed=3)
    sides = [{cities.groups[i] for i in part} for part in (split.train, split.val, split.test)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert sorted(split.train + split.val + split.test) == list(range(len(cities)))
    other = split_by_group(negated, seed=3)
    assert {negated.groups[i] for i in other.test} == sides[2]  # a test city is a test city everywhere
    assert split_by_group(cities, seed=3) == split  # seeded
    assert split_by_group(cities, seed=4).test != split.test


def _dataset(labels: list[int], groups: list[str], splits: list[str] | None = None) -> ProbeDataset:
    texts = tuple(f"s{i}" for i in range(len(labels)))
    return ProbeDataset(
        "mine", texts, tuple(labels), tuple(groups), "test", None if splits is None else tuple(splits)
    )


def test_split_refusals() -> None:
    with pytest.raises(InputError, match="holds only label 1"):
        split_by_group(_dataset([1] * 40, [f"g{i}" for i in range(40)]))
    with pytest.raises(InputError, match=r"split holds [01] groups.*needs at least 2"):
        split_by_group(_dataset([1, 0] * 2, ["a", "a", "b", "b"]))
    leak = _dataset([1, 0, 1, 0], ["a", "a", "b", "b"], ["train", "test", "train", "test"])
    with pytest.raises(InputError, match="group 'a' is in both train and test"):
        split_by_group(leak)


@pytest.mark.parametrize("name", ["roleplay", "sycophancy", "comparisons"])
def test_small_sets_split_by_rank_when_the_hash_leaves_a_side_short(name: str) -> None:
    dataset = load_dataset(name)
    for seed in range(4):
        split = split_by_group(dataset, seed=seed)
        counts = [len({dataset.groups[i] for i in part}) for part in (split.train, split.val, split.test)]
        assert min(counts) >= 2 and sum(counts) == len(set(dataset.groups))
