"""Bottom-k example reservoirs: keep, per group, the `size` entries with the smallest (key, token index).

Both the top-activating examples (key: larger activation first) and the seeded quantile samples
(key: a hash of the seed, token and unit) are "the `size` smallest keys of each group", a
selection that does not depend on the order entries arrive in or on how a pass is split: offering
two halves to two reservoirs and merging them keeps exactly what one reservoir offered everything
keeps, bit for bit. Ties on the key are broken by the lower global token index; two entries of one
group never share a token index, so the order is total.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EMPTY = torch.iinfo(torch.int64).max  # the key of an empty slot (sorts after every real key)
MASK63 = 0x7FFF_FFFF_FFFF_FFFF
MIX1 = 0x3F58_476D_1CE4_E5B9  # odd 63-bit multipliers (splitmix64's, top bit dropped)
MIX2 = 0x14D0_49BB_1331_11EB


def mix63(x: torch.Tensor) -> torch.Tensor:
    """A splitmix-style hash of int64 values into non-negative 63-bit keys (same on CPU and GPU:
    integer ops only; products wrap, then the sign bit is cleared so shifts are logical)."""
    x = x & MASK63
    x = ((x ^ (x >> 30)) * MIX1) & MASK63
    x = ((x ^ (x >> 27)) * MIX2) & MASK63
    return x ^ (x >> 31)


def sample_keys(seed: int, token_index: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """The priority key of (token, unit) for seeded sampling: a hash of (seed, global token index,
    unit), so every build over the same tokens with the same seed samples the same examples."""
    return mix63(mix63(token_index * 2_654_435_761 + seed) ^ (unit + 0x5851_F42D))


def topk_keys(values_bits: torch.Tensor) -> torch.Tensor:
    """Keys that sort larger positive float32 activations first: for positive floats the int32
    bit pattern grows with the value, so `inf bits - bits` is an exact order-reversing key."""
    return 0x7F80_0000 - values_bits.to(torch.int64)


def bottom_k(groups: torch.Tensor, keys: torch.Tensor, token_index: torch.Tensor, size: int) -> torch.Tensor:
    """`[n]` bool: the entries among the `size` smallest (key, token index) of their group."""
    order = torch.argsort(token_index, stable=True)
    order = order[torch.argsort(keys[order], stable=True)]
    order = order[torch.argsort(groups[order], stable=True)]
    sorted_groups = groups[order]
    first = torch.searchsorted(sorted_groups, sorted_groups, side="left")
    rank = torch.arange(len(order), device=groups.device) - first
    kept = torch.zeros_like(groups, dtype=torch.bool)
    kept[order[rank < size]] = True
    return kept


@dataclass
class Entries:
    """Candidate examples: one row per (group, token); `tokens`/`acts` are `[n, window]` contexts."""

    groups: torch.Tensor  # [n] int64
    keys: torch.Tensor  # [n] int64
    token_index: torch.Tensor  # [n] int64, global token index
    values: torch.Tensor  # [n] float32, the unit's activation on the token
    tokens: torch.Tensor  # [n, window] int64, -1 outside the row
    acts: torch.Tensor  # [n, window] float32, the unit's activation on each context token

    def select(self, mask: torch.Tensor) -> Entries:
        return Entries(*(getattr(self, name)[mask] for name in FIELDS))


FIELDS = ("groups", "keys", "token_index", "values", "tokens", "acts")


class Reservoir:
    """Per group (`n_groups` of them), the `size` entries with the smallest (key, token index)."""

    def __init__(self, n_groups: int, size: int, window: int, device: torch.device | str = "cpu") -> None:
        self.size = size
        self.keys = torch.full((n_groups, size), EMPTY, dtype=torch.int64, device=device)
        self.token_index = torch.full((n_groups, size), -1, dtype=torch.int64, device=device)
        self.values = torch.zeros(n_groups, size, device=device)
        self.tokens = torch.full((n_groups, size, window), -1, dtype=torch.int64, device=device)
        self.acts = torch.zeros(n_groups, size, window, device=device)

    def threshold(self, groups: torch.Tensor) -> torch.Tensor:
        """`[n]` the largest key each group still keeps (EMPTY while it has a free slot)."""
        return self.keys[groups, -1]

    def entries(self, groups: torch.Tensor | None = None) -> Entries:
        """The kept entries (of `groups` only, when given) as candidates."""
        rows = torch.arange(len(self.keys), device=self.keys.device) if groups is None else groups
        valid = self.keys[rows] != EMPTY
        owner = rows[:, None].expand(-1, self.size)
        return Entries(
            owner[valid],
            self.keys[rows][valid],
            self.token_index[rows][valid],
            self.values[rows][valid],
            self.tokens[rows][valid],
            self.acts[rows][valid],
        )

    def offer(self, new: Entries) -> None:
        """Keep, per group, the best `size` of what it held and the `new` entries."""
        if len(new.groups) == 0:
            return
        touched = torch.unique(new.groups)
        held = self.entries(touched)
        both = Entries(*(torch.cat([getattr(held, name), getattr(new, name)]) for name in FIELDS))
        both = both.select(bottom_k(both.groups, both.keys, both.token_index, self.size))
        order = torch.argsort(both.token_index, stable=True)
        order = order[torch.argsort(both.keys[order], stable=True)]
        order = order[torch.argsort(both.groups[order], stable=True)]
        both = both.select(order)
        slot = torch.arange(len(both.groups), device=both.groups.device)
        slot = slot - torch.searchsorted(both.groups, both.groups, side="left")
        self.keys[touched] = EMPTY
        self.token_index[touched] = -1
        self.values[touched] = 0.0
        self.tokens[touched] = -1
        self.acts[touched] = 0.0
        for name in FIELDS[1:]:
            getattr(self, name)[both.groups, slot] = getattr(both, name)

    def absorb(self, other: Reservoir) -> None:
        """Merge `other` (a reservoir over other tokens) into this one."""
        self.offer(other.entries())
