"""Train / validation / test splits by group (a city never appears on two sides), seeded.

A group's side depends only on the seed and its own name (a hash), not on the other groups: so `cities`
and `neg_cities`, which share their cities, put each city on the same side, and a probe trained on one
and tested on the other never sees a test city in training.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from rama.errors import InputError
from rama.probes.datasets import ProbeDataset

MIN_GROUPS = 2  # per split side, each with both labels: the least that gives an AUROC


@dataclass(frozen=True)
class Split:
    """Indices into a dataset, one list per side."""

    train: list[int]
    val: list[int]
    test: list[int]


def group_position(group: str, seed: int) -> float:
    """A seeded number in [0, 1) for `group`, the same in every dataset."""
    digest = hashlib.sha256(f"{seed}\x00{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_group(
    dataset: ProbeDataset, seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2
) -> Split:
    """Each group goes to train, val or test by its seeded position; a user file's own `split` column
    wins (then a group on two sides is refused). Each side must hold both labels."""
    if not (0 <= val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise InputError(
            f"split fractions val={val_fraction}, test={test_fraction}: each in [0, 1), test > 0, sum < 1"
        )
    if dataset.splits is not None:
        sides = list(dataset.splits)
        check_no_leak(dataset, sides)
    else:
        sides = hashed_sides(dataset.groups, seed, val_fraction, test_fraction)
    split = Split(*([i for i, s in enumerate(sides) if s == side] for side in ("train", "val", "test")))
    for side in ("train", "val", "test") if val_fraction > 0 or dataset.splits else ("train", "test"):
        check_side(dataset, getattr(split, side), side)
    return split


def hashed_sides(groups: tuple[str, ...], seed: int, val_fraction: float, test_fraction: float) -> list[str]:
    """Each group's side by its seeded position against the fractions; when that leaves a side of a small
    dataset with fewer than MIN_GROUPS groups, the groups are cut by rank of position instead (so the
    sides hold the fractions' counts; a dataset that small loses the cross-dataset agreement)."""
    unique = sorted(set(groups), key=lambda g: group_position(g, seed))
    cut_val, cut_test = 1 - val_fraction - test_fraction, 1 - test_fraction
    side = {g: "train" if group_position(g, seed) < cut_val else "val" if group_position(g, seed) < cut_test
            else "test" for g in unique}  # fmt: skip
    wanted = [s for s, f in (("val", val_fraction), ("test", test_fraction)) if f > 0]
    if any(sum(v == s for v in side.values()) < MIN_GROUPS for s in wanted):
        n_val, n_test = round(val_fraction * len(unique)), round(test_fraction * len(unique))
        n_train = len(unique) - n_val - n_test
        side = {
            g: "train" if i < n_train else "val" if i < n_train + n_val else "test"
            for i, g in enumerate(unique)
        }
    return [side[g] for g in groups]


def check_no_leak(dataset: ProbeDataset, sides: list[str]) -> None:
    seen: dict[str, str] = {}
    for group, side in zip(dataset.groups, sides, strict=True):
        if seen.setdefault(group, side) != side:
            raise InputError(
                f"{dataset.name}: group {group!r} is in both {seen[group]} and {side}; give every row of a "
                f"group the same split (or drop the split column to split by group automatically)"
            )


def check_side(dataset: ProbeDataset, indices: list[int], side: str) -> None:
    groups = {dataset.groups[i] for i in indices}
    labels = {dataset.labels[i] for i in indices}
    if len(groups) < MIN_GROUPS:
        total = len(set(dataset.groups))
        raise InputError(
            f"{dataset.name}: the {side} split holds {len(groups)} groups (items); it needs at least "
            f"{MIN_GROUPS}: give more items (the dataset has {total} groups in all)"
        )
    if labels != {0, 1}:
        raise InputError(
            f"{dataset.name}: the {side} split holds only label {labels.pop()}; a probe needs true and "
            f"false statements on every side (check the label column)"
        )
