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


def token_keys(seed: int, token_index: torch.Tensor) -> torch.Tensor:
    """Seeded 63-bit random keys of tokens by global index. A sample's priority key is
    `token_keys ^ unit_keys`: for one unit that is a fixed bijection of independent uniform keys,
    so each unit's bottom-k is a uniform sample, and the same seed and tokens give the same one."""
    return mix63(token_index * 2_654_435_761 + seed)


def unit_keys(seed: int, n_units: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """`[n_units]` seeded 63-bit keys, one per unit (see `token_keys`)."""
    return mix63(torch.arange(n_units, device=device) * 0x5851_F42D + seed * 0x9E37_79B9 + 1)


MAX_TOKEN_INDEX = 1 << 32  # top-example keys hold the token index in their low 32 bits


def topk_keys(values_bits: torch.Tensor) -> torch.Tensor:
    """Keys that sort larger positive float32 activations first: for positive floats the int32
    bit pattern grows with the value, so `inf bits - bits` (< 2^31) is an exact order-reversing
    key; `(key << 32) | token index` then orders ties by the lower token index, uniquely."""
    return 0x7F80_0000 - values_bits.to(torch.int64)


def ranked(
    groups: torch.Tensor, keys: torch.Tensor, token_index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, rank): `order` sorts the entries by (group, key, token index); `rank[i]` is the
    place of entry `order[i]` within its group (0 = smallest key)."""
    order = torch.argsort(token_index, stable=True)
    order = order[torch.argsort(keys[order], stable=True)]
    order = order[torch.argsort(groups[order], stable=True)]
    sorted_groups = groups[order]
    first = torch.searchsorted(sorted_groups, sorted_groups, side="left")
    return order, torch.arange(len(order), device=groups.device) - first


def bottom_k(groups: torch.Tensor, keys: torch.Tensor, token_index: torch.Tensor, size: int) -> torch.Tensor:
    """`[n]` bool: the entries among the `size` smallest (key, token index) of their group."""
    order, rank = ranked(groups, keys, token_index)
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
    tokens: torch.Tensor  # [n, window] int32 token ids, -1 outside the row
    acts: torch.Tensor  # [n, window] float32, the unit's activation on each context token

    def select(self, mask: torch.Tensor) -> Entries:
        return Entries(*(getattr(self, name)[mask] for name in FIELDS))

    def reshape(self, rows: int) -> Entries:
        """Entries laid out as `rows` groups of equal count (group i's entries in row i)."""
        return Entries(
            *(getattr(self, name).reshape(rows, -1, *getattr(self, name).shape[1:]) for name in FIELDS)
        )


FIELDS = ("groups", "keys", "token_index", "values", "tokens", "acts")


class Reservoir:
    """Per group (`n_groups` of them), the `size` entries with the smallest (key, token index)."""

    def __init__(self, n_groups: int, size: int, window: int, device: torch.device | str = "cpu") -> None:
        self.size = size
        self.keys = torch.full((n_groups, size), EMPTY, dtype=torch.int64, device=device)
        self.token_index = torch.full((n_groups, size), -1, dtype=torch.int64, device=device)
        self.values = torch.zeros(n_groups, size, device=device)
        self.tokens = torch.full((n_groups, size, window), -1, dtype=torch.int32, device=device)
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
        order, rank = ranked(both.groups, both.keys, both.token_index)
        both = both.select(order[rank < self.size])
        slot = rank[rank < self.size]
        self.keys[touched] = EMPTY
        self.token_index[touched] = -1
        self.values[touched] = 0.0
        self.tokens[touched] = -1
        self.acts[touched] = 0.0
        for name in FIELDS[1:]:
            getattr(self, name)[both.groups, slot] = getattr(both, name)

    def merge_rows(self, new: Entries) -> None:
        """Keep per group the `size` smallest keys of what it held and `new` (`[n_groups, m]` fields,
        row i for group i; EMPTY keys for unused slots). Keys must be unique within a group, as the
        top examples' composite keys are, so the order needs no tie-break."""
        keys = torch.cat([self.keys, new.keys], 1)
        pick = keys.topk(self.size, dim=1, largest=False).indices  # ascending keys
        for name in FIELDS[1:]:
            both = torch.cat([getattr(self, name), getattr(new, name)], 1)
            index = pick if both.ndim == 2 else pick[..., None].expand(-1, -1, both.shape[2])
            setattr(self, name, both.gather(1, index))

    def absorb(self, other: Reservoir) -> None:
        """Merge `other` (a reservoir over other tokens) into this one."""
        self.offer(other.entries())
