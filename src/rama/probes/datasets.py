"""Labelled statements for probes: built-in sets generated from the shipped tables (`tables/`, sources in
`tables/SOURCES.md`) and a loader for a user's JSONL or CSV file.

Labels: 1 is the true / honest statement, 0 the false / deceptive one (Geometry of Truth's convention).
`group` names the item a statement is about (a city, a pair of numbers, a scenario): splits keep a group
on one side, and a group holding one statement of each label is a contrast pair for CCS and LAT.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rama.errors import InputError

TABLES = Path(__file__).parent / "tables"
HONEST_PERSONA = "Pretend you are an honest person making statements about the world."
DECEPTIVE_PERSONA = "Pretend you are a dishonest person making statements about the world."
LABEL_WORDS = {"1": 1, "0": 0, "true": 1, "false": 0, "honest": 1, "deceptive": 0, "yes": 1, "no": 0}


@dataclass(frozen=True)
class ProbeDataset:
    """Statements `texts[i]` with `labels[i]` (0/1), `groups[i]` and an optional fixed `splits[i]`."""

    name: str
    texts: tuple[str, ...]
    labels: tuple[int, ...]
    groups: tuple[str, ...]
    source: str = "builtin"
    splits: tuple[str, ...] | None = None  # "train" / "val" / "test" from a user file's `split` column

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> ProbeDataset:
        pick = list(indices)
        splits = None if self.splits is None else tuple(self.splits[i] for i in pick)
        return ProbeDataset(self.name, tuple(self.texts[i] for i in pick), tuple(self.labels[i] for i in pick),
                            tuple(self.groups[i] for i in pick), self.source, splits)  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """What a probe file records about its training data."""
        return {"name": self.name, "source": self.source, "items": len(self), "true": sum(self.labels),
                "false": len(self) - sum(self.labels), "groups": len(set(self.groups))}  # fmt: skip

    def pairs(self) -> tuple[list[int], list[int]]:
        """(true index, false index) of every group holding both labels: the first of each, in order."""
        first: dict[str, dict[int, int]] = {}
        for i, (label, group) in enumerate(zip(self.labels, self.groups, strict=True)):
            first.setdefault(group, {}).setdefault(label, i)
        both = [seen for seen in first.values() if len(seen) == 2]
        return [seen[1] for seen in both], [seen[0] for seen in both]


def read_table(name: str) -> list[dict[str, str]]:
    with open(TABLES / f"{name}.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _build(name: str, rows: list[tuple[str, int, str]]) -> ProbeDataset:
    texts, labels, groups = zip(*rows, strict=True) if rows else ((), (), ())
    return ProbeDataset(name, tuple(texts), tuple(labels), tuple(groups))


def _other(rng: random.Random, choices: list[str], not_this: str) -> str:
    while (pick := rng.choice(choices)) == not_this:
        pass
    return pick


def city_facts(seed: int = 0) -> list[tuple[str, str, str]]:
    """(city, its country, a wrong country) for every row of `cities.csv`. The wrong country is the country
    of another city drawn with `seed`, so each country is named about as often in false statements as in
    true ones: a probe cannot score by how common a country is."""
    rows = read_table("cities")
    countries = [row["country"] for row in rows]
    rng = random.Random(seed)
    return [(row["city"], row["country"], _other(rng, countries, row["country"])) for row in rows]


def cities(seed: int = 0) -> ProbeDataset:
    rows = []
    for city, country, wrong in city_facts(seed):
        rows += [
            (f"The city of {city} is in {country}.", 1, city),
            (f"The city of {city} is in {wrong}.", 0, city),
        ]
    return _build("cities", rows)


def neg_cities(seed: int = 0) -> ProbeDataset:
    rows = []
    for city, country, wrong in city_facts(seed):
        rows += [(f"The city of {city} is not in {wrong}.", 1, city),
                 (f"The city of {city} is not in {country}.", 0, city)]  # fmt: skip
    return _build("neg_cities", rows)


def _number_pairs(seed: int, count: int = 300) -> list[tuple[int, int]]:
    """`count` distinct pairs (larger, smaller) of two-digit numbers, chosen with `seed`."""
    every = [(a, b) for a in range(11, 100) for b in range(10, a)]
    return random.Random(seed).sample(every, count)


def larger_than(seed: int = 0) -> ProbeDataset:
    rows = []
    for a, b in _number_pairs(seed):
        rows += [(f"{a} is larger than {b}.", 1, f"{a},{b}"), (f"{b} is larger than {a}.", 0, f"{a},{b}")]
    return _build("larger_than", rows)


def smaller_than(seed: int = 0) -> ProbeDataset:
    rows = []
    for a, b in _number_pairs(seed + 1):
        rows += [(f"{b} is smaller than {a}.", 1, f"{a},{b}"), (f"{a} is smaller than {b}.", 0, f"{a},{b}")]
    return _build("smaller_than", rows)


def comparisons(seed: int = 0) -> ProbeDataset:
    rows = []
    for row in read_table("comparisons"):
        big, small = row["larger"], row["smaller"]
        rows += [(f"{big} is bigger than {small}.", 1, big),
                 (f"{small[0].upper()}{small[1:]} is bigger than {big[0].lower()}{big[1:]}.", 0, big)]  # fmt: skip
    return _build("comparisons", rows)


def instructed(seed: int = 0) -> ProbeDataset:
    """Apollo's / RepE's instructed pairs: one true city fact after an honest or a dishonest persona."""
    rows = []
    for city, country, _ in city_facts(seed)[:150]:
        fact = f"The city of {city} is in {country}."
        rows += [(f"{HONEST_PERSONA} {fact}", 1, city), (f"{DECEPTIVE_PERSONA} {fact}", 0, city)]
    return _build("instructed", rows)


def roleplay(seed: int = 0) -> ProbeDataset:
    rows = []
    for row in read_table("roleplay"):
        scene = row["scenario"]
        rows += [(f"{scene} {row['honest']}", 1, scene), (f"{scene} {row['deceptive']}", 0, scene)]
    return _build("roleplay", rows)


def sycophancy(seed: int = 0) -> ProbeDataset:
    """A user's wrong opinion, then a correcting reply (1) or an agreeing, sycophantic one (0)."""
    rows = []
    for row in read_table("sycophancy"):
        said = f"User: {row['opinion']} Assistant:"
        rows += [
            (f"{said} {row['disagree']}", 1, row["opinion"]),
            (f"{said} {row['agree']}", 0, row["opinion"]),
        ]
    return _build("sycophancy", rows)


BUILTIN: dict[str, Callable[[int], ProbeDataset]] = {
    "cities": cities,
    "neg_cities": neg_cities,
    "larger_than": larger_than,
    "smaller_than": smaller_than,
    "comparisons": comparisons,
    "instructed": instructed,
    "roleplay": roleplay,
    "sycophancy": sycophancy,
}


def load_dataset(source: str | Path, *, limit: int | None = None, seed: int = 0) -> ProbeDataset:
    """A built-in set by name (see `BUILTIN`) or a user's `.jsonl` / `.csv` file; `limit` keeps the
    first `limit` groups (both statements of each), so a small run still has balanced pairs."""
    name = str(source)
    if name in BUILTIN:
        dataset = BUILTIN[name](seed)
    elif Path(name).suffix in (".jsonl", ".csv"):
        dataset = read_user_file(Path(name))
    else:
        raise InputError(
            f"--data {name!r} is neither a built-in dataset ({', '.join(BUILTIN)}) nor a .jsonl or .csv file"
        )
    return dataset if limit is None else first_groups(dataset, limit)


def first_groups(dataset: ProbeDataset, limit: int) -> ProbeDataset:
    if limit < 1:
        raise InputError(f"limit must be at least 1 group, not {limit}")
    keep = list(dict.fromkeys(dataset.groups))[:limit]
    chosen = set(keep)
    return dataset.subset([i for i, g in enumerate(dataset.groups) if g in chosen])


def read_user_file(path: Path) -> ProbeDataset:
    """Rows with `text`, `label` (0/1, true/false, honest/deceptive), optional `group` (default: the row
    itself) and optional `split` (train/val/test); a row without text or label names its line."""
    if not path.is_file():
        raise InputError(f"dataset file {str(path)!r} does not exist")
    records = _jsonl_records(path) if path.suffix == ".jsonl" else _csv_records(path)
    if not records:
        raise InputError(f"dataset file {str(path)!r} holds no rows")
    texts, labels, groups, splits = [], [], [], []
    for line, record in records:
        texts.append(_field(record, "text", path, line))
        labels.append(_label(_field(record, "label", path, line), path, line))
        groups.append(str(record.get("group") or f"row {line}"))
        splits.append(str(record.get("split") or ""))
    fixed = tuple(splits) if any(splits) else None
    if fixed is not None and not all(s in ("train", "val", "test") for s in fixed):
        raise InputError(f"{path}: the split column may hold only train, val or test (or be absent)")
    return ProbeDataset(path.stem, tuple(texts), tuple(labels), tuple(groups), str(path), fixed)


def _jsonl_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path}, line {number}: not valid JSON ({error.msg})") from error
            if not isinstance(record, dict):
                raise InputError(
                    f"{path}, line {number}: each line must be a JSON object with text and label"
                )
            records.append((number, record))
    return records


def _csv_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [(number, dict(row)) for number, row in enumerate(csv.DictReader(handle), start=2)]


def _field(record: dict[str, Any], key: str, path: Path, line: int) -> str:
    value = record.get(key)
    if value is None or str(value).strip() == "":
        raise InputError(
            f"{path}, line {line}: the {key!r} field is missing or empty (every row needs text and label)"
        )
    return str(value)


def _label(value: str, path: Path, line: int) -> int:
    label = LABEL_WORDS.get(str(value).strip().lower())
    if label is None:
        raise InputError(f"{path}, line {line}: label {value!r} is not 0/1, true/false or honest/deceptive")
    return label
