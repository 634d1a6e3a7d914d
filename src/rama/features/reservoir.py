"""Bottom-k example reservoirs: keep, per group, the `size` entries with the smallest keys.

Every key is `(priority << 32) | global token index`, unique within a group (a group never sees one
token twice), so "the `size` smallest keys of each group" is one well-defined set that does not
depend on the order entries arrive in or on how a pass is split: offering two halves to two
reservoirs and merging them keeps exactly what one reservoir offered everything keeps, bit for bit.
- top examples: priority = `inf bits - activation bits` (larger activation first; equal
  activations to the lower token index);
- quantile samples: priority = the top 31 bits of a seeded hash of (token, unit), a uniform random
  order (equal hashes, 1 in 2^31, to the lower token index).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EMPTY = torch.iinfo(torch.int64).max  # the key of an empty slot (sorts after every real key)
MASK63 = 0x7FFF_FFFF_FFFF_FFFF
MIX1 = 0x3F58_476D_1CE4_E5B9  # odd 63-bit multipliers (splitmix64's, top bit dropped)
MIX2 = 0x14D0_49BB_1331_11EB
MAX_TOKEN_INDEX = 1 << 32  # keys hold the token index in their low 32 bits


def mix63(x: torch.Tensor) -> torch.Tensor:
    """A splitmix-style hash of int64 values into non-negative 63-bit values (same on CPU and GPU:
    integer ops only; products wrap, then the sign bit is cleared so shifts are logical)."""
    x = x & MASK63
    x = ((x ^ (x >> 30)) * MIX1) & MASK63
    x = ((x ^ (x >> 27)) * MIX2) & MASK63
    return x ^ (x >> 31)


def token_hashes(seed: int, token_index: torch.Tensor) -> torch.Tensor:
    """Seeded 63-bit hashes of tokens by global index. A sample's hash is `token ^ unit hash`: for
    one unit a fixed bijection of independent uniform values, so each unit's bottom-k is a uniform
    sample, and the same seed and tokens give the same one."""
    return mix63(token_index * 2_654_435_761 + seed)


def unit_hashes(seed: int, n_units: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """`[n_units]` seeded 63-bit hashes, one per unit (see `token_hashes`)."""
    return mix63(torch.arange(n_units, device=device) * 0x5851_F42D + seed * 0x9E37_79B9 + 1)


def sample_keys(hashes: torch.Tensor, token_index: torch.Tensor) -> torch.Tensor:
    """Keys of seeded samples: the hash's top 31 bits, then the token index."""
    return ((hashes >> 32) << 32) | token_index


def top_keys(values: torch.Tensor, token_index: torch.Tensor) -> torch.Tensor:
    """Keys of top examples from positive float32 `values`: for positive floats the int32 bit
    pattern grows with the value, so `inf bits - bits` (< 2^31) is an exact order-reversing priority."""
    return ((0x7F80_0000 - values.view(torch.int32).to(torch.int64)) << 32) | token_index


def ranked(groups: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, rank): `order` sorts the entries by (group, key); `rank[i]` is the place of entry
    `order[i]` within its group (0 = smallest key)."""
    order = torch.argsort(keys, stable=True)
    order = order[torch.argsort(groups[order], stable=True)]
    sorted_groups = groups[order]
    first = torch.searchsorted(sorted_groups, sorted_groups, side="left")
    return order, torch.arange(len(order), device=groups.device) - first


@dataclass
class Entries:
    """Candidate examples: one row per (group, token); `tokens`/`acts` are `[n, window]` contexts."""

    groups: torch.Tensor  # [n] int64
    keys: torch.Tensor  # [n] int64
    token_index: torch.Tensor  # [n] int64, global token index
    values: torch.Tensor  # [n] float32, the unit's activation on the token
    tokens: torch.Tensor  # [n, window] int32 token ids, -1 outside the row
    acts: torch.Tensor  # [n, window] float32, the unit's activation on each context token

    def select(self, index: torch.Tensor) -> Entries:
        return Entries(*(getattr(self, name)[index] for name in FIELDS))


FIELDS = ("groups", "keys", "token_index", "values", "tokens", "acts")
SLOTS = FIELDS[1:]  # what a reservoir stores per slot
EMPTY_SLOT = {"keys": EMPTY, "token_index": -1, "values": 0.0, "tokens": -1, "acts": 0.0}


class Reservoir:
    """Per group (`n_groups` of them), the `size` entries with the smallest keys, in key order."""

    def __init__(self, n_groups: int, size: int, window: int, device: torch.device | str = "cpu") -> None:
        self.size = size
        self.keys = torch.full((n_groups, size), EMPTY, dtype=torch.int64, device=device)
        self.token_index = torch.full((n_groups, size), -1, dtype=torch.int64, device=device)
        self.values = torch.zeros(n_groups, size, device=device)
        self.tokens = torch.full((n_groups, size, window), -1, dtype=torch.int32, device=device)
        self.acts = torch.zeros(n_groups, size, window, device=device)

    def threshold(self, groups: torch.Tensor) -> torch.Tensor:
        """`[n]` the largest key each group keeps (EMPTY while it has a free slot)."""
        return self.keys[groups, -1]

    def entries(self) -> Entries:
        """Every kept entry, as candidates (for merging into another reservoir)."""
        valid = self.keys != EMPTY
        owner = torch.arange(len(self.keys), device=self.keys.device)[:, None].expand(-1, self.size)
        return Entries(owner[valid], *(getattr(self, name)[valid] for name in SLOTS))

    def offer(self, new: Entries) -> None:
        """Keep, per group, the `size` smallest keys of what it held and the `new` entries: the new
        ones are laid out `[groups touched, size]` and merged row by row with `topk`."""
        if len(new.groups) == 0:
            return
        order, rank = ranked(new.groups, new.keys)
        best = rank < self.size
        new, rank = new.select(order[best]), rank[best]
        rows, row_of = torch.unique(new.groups, return_inverse=True)
        keys = torch.cat([self.keys[rows], self.laid_out(new, "keys", rows, row_of, rank)], 1)
        pick = keys.topk(self.size, dim=1, largest=False).indices  # ascending keys
        for name in SLOTS:
            both = torch.cat([getattr(self, name)[rows], self.laid_out(new, name, rows, row_of, rank)], 1)
            index = pick if both.ndim == 2 else pick[..., None].expand(-1, -1, both.shape[2])
            getattr(self, name)[rows] = both.gather(1, index)

    def laid_out(
        self, new: Entries, name: str, rows: torch.Tensor, row_of: torch.Tensor, rank: torch.Tensor
    ) -> torch.Tensor:
        """Field `name` of `new` as `[len(rows), size, ...]`, empty slots filled as a fresh reservoir's."""
        held = getattr(self, name)
        out = torch.full((len(rows), *held.shape[1:]), EMPTY_SLOT[name], dtype=held.dtype, device=held.device)
        out[row_of, rank] = getattr(new, name)
        return out

    def absorb(self, other: Reservoir) -> None:
        """Merge `other` (a reservoir over other tokens) into this one."""
        self.offer(other.entries())
