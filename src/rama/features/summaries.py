"""Mergeable per-unit statistics from one streaming pass: memory depends on the units, not the tokens.

A unit (an SAE latent or an MLP neuron) *fires* on a token where its activation is above zero.
Per unit, over the kept (non-special) tokens:
- `count` (firing tokens), `total` (sum of firing activations), `max` (largest activation,
  firing or not), `tokens` (tokens seen): density = count / tokens, mean = total / count;
- `hist`: counts of firing activations in fixed log-spaced bins. The edges are chosen up front
  from the config alone (`bins_per_decade` bins per power of ten from `hist_low` to `hist_high`,
  plus one bin below and one above), so histograms of two passes merge by adding them;
- top examples: the `top_k` largest activations, ties to the lower global token index;
- quantile samples: in every histogram bin, the `samples_per_bin` firing tokens with the smallest
  priority key hash(seed, global token index) XOR hash(seed, unit): for one unit a seeded uniform
  sample without replacement of that bin's tokens (bottom-k sampling). `quantile_examples` groups the bins into activation
  quantiles of the unit's own histogram when the pass is over.

Every example keeps a context window (`left` tokens before, `right` after, within its row) with the
unit's activation on each of its tokens. Counts, max, histograms and examples merge exactly (two
halves merged equal one pass bit for bit); `total` is a float64 sum, equal up to rounding order.
The global token index of position p in row r is r * context_size + p, rows counted from the start
of the token stream, so a pass split across processes keeps each token's identity.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch

from rama.errors import ConfigError
from rama.features.reservoir import (
    EMPTY,
    MAX_TOKEN_INDEX,
    Entries,
    Reservoir,
    ranked,
    sample_keys,
    token_hashes,
    top_keys,
    unit_hashes,
)


@dataclass(frozen=True)
class SummaryConfig:
    """What the pass keeps per unit."""

    top_k: int = 20
    left: int = 12  # context tokens kept before an example's token
    right: int = 4  # and after it
    hist_low: float = 1e-3
    hist_high: float = 1e3
    bins_per_decade: int = 8
    samples_per_bin: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("top_k", "bins_per_decade", "samples_per_bin"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.left < 0 or self.right < 0:
            raise ConfigError(f"context left/right must be >= 0, not {self.left}/{self.right}")
        if not 0 < self.hist_low < self.hist_high:
            raise ConfigError(f"need 0 < hist_low < hist_high, not {self.hist_low}, {self.hist_high}")

    @property
    def window(self) -> int:
        return self.left + 1 + self.right

    def edges(self) -> torch.Tensor:
        """`[n_bins - 1]` float32 bin edges: bin 0 is (0, edges[0]), bin i is [edges[i-1], edges[i]),
        the last bin is [edges[-1], inf)."""
        decades = math.log10(self.hist_high) - math.log10(self.hist_low)
        steps = max(1, round(decades * self.bins_per_decade))
        exponents = torch.linspace(
            math.log10(self.hist_low), math.log10(self.hist_high), steps + 1, dtype=torch.float64
        )
        return (10.0**exponents).float()

    @property
    def n_bins(self) -> int:
        return len(self.edges()) + 1


class UnitStats:
    """The streaming summary of `n_units` units; `update` per batch, `absorb` another pass's."""

    def __init__(self, n_units: int, config: SummaryConfig, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.n_units = n_units
        self.context_size = 0  # set by the first batch
        self.tokens = 0
        self.edges = config.edges().to(device)
        n_bins = len(self.edges) + 1
        self.count = torch.zeros(n_units, dtype=torch.int64, device=device)
        self.total = torch.zeros(n_units, dtype=torch.float64, device=device)
        self.max = torch.full((n_units,), -math.inf, device=device)
        self.hist = torch.zeros(n_units, n_bins, dtype=torch.int64, device=device)
        self.top = Reservoir(n_units, config.top_k, config.window, device)
        self.unit_hashes = unit_hashes(config.seed, n_units, device)
        self.samples = Reservoir(n_units * n_bins, config.samples_per_bin, config.window, device)

    @property
    def density(self) -> torch.Tensor:
        return self.count.double() / max(1, self.tokens)

    @property
    def mean(self) -> torch.Tensor:
        """Mean firing activation (0 for a unit that never fired)."""
        return self.total / self.count.clamp(min=1)

    def update(self, acts: torch.Tensor, tokens: torch.Tensor, keep: torch.Tensor, first_row: int) -> None:
        """Add one batch: `acts [rows, pos, n_units]`, `tokens [rows, pos]`, `keep [rows, pos]`
        (False: a special token, not counted), the batch's first row being row `first_row` of the
        token stream."""
        rows, positions, _ = acts.shape
        if self.context_size and positions != self.context_size:
            raise ConfigError(f"every batch must have {self.context_size} positions, not {positions}")
        self.context_size = positions
        keep = keep.to(acts.device)
        acts = acts.float().masked_fill(~keep[..., None], 0.0)  # special tokens: activation 0
        flat = acts.view(rows * positions, self.n_units)
        kept = flat[keep.view(-1)]
        self.tokens += len(kept)
        if len(kept):
            self.max = torch.maximum(self.max, kept.amax(0))
        token_at, unit = (flat > 0).nonzero(as_tuple=True)  # the firing entries, token-major
        value = flat[token_at, unit]
        self.count += torch.bincount(unit, minlength=self.n_units)
        self.total.index_add_(0, unit, value.double())
        token_index = first_row * positions + torch.arange(len(flat), device=flat.device)  # [tokens]
        if int(token_index[-1]) >= MAX_TOKEN_INDEX:
            raise ConfigError(f"a pass numbers at most {MAX_TOKEN_INDEX} tokens (2^32)")
        self.offer_top(flat, token_at, unit, value, token_index, acts, tokens)
        bins = torch.bucketize(value, self.edges, right=True)
        groups = unit * self.hist.shape[1] + bins
        self.hist += torch.bincount(groups, minlength=self.hist.numel()).view_as(self.hist)
        hashes = token_hashes(self.config.seed, token_index)[token_at] ^ self.unit_hashes[unit]
        keys = sample_keys(hashes, token_index[token_at])
        self.offer(self.samples, groups, keys, token_at, unit, value, token_index, acts, tokens)

    def offer(
        self,
        reservoir: Reservoir,
        groups: torch.Tensor,
        keys: torch.Tensor,
        token_at: torch.Tensor,
        unit: torch.Tensor,
        value: torch.Tensor,
        token_index: torch.Tensor,
        acts: torch.Tensor,
        tokens: torch.Tensor,
    ) -> None:
        """Offer firing entries to a reservoir: only those that beat their group's largest kept key,
        at most `size` per group, get their context gathered."""
        candidate = (keys < reservoir.threshold(groups)).nonzero(as_tuple=True)[0]
        order, rank = ranked(groups[candidate], keys[candidate])
        pick = candidate[order[rank < reservoir.size]]
        at = token_at[pick]
        reservoir.offer(
            self.entries(groups[pick], keys[pick], token_index[at], value[pick], unit[pick], at, acts, tokens)
        )

    def offer_top(
        self,
        flat: torch.Tensor,
        token_at: torch.Tensor,
        unit: torch.Tensor,
        value: torch.Tensor,
        token_index: torch.Tensor,
        acts: torch.Tensor,
        tokens: torch.Tensor,
    ) -> None:
        """Candidates for the top examples: firing entries at least as large as their unit's
        `top_k`-th largest value in the batch (ties included, so none is lost), keyed by
        (larger activation, then lower token index) in one exact composite key."""
        kth = flat.topk(min(self.config.top_k, len(flat)), dim=0).values[-1]  # [n_units]
        pick = (value >= kth[unit]).nonzero(as_tuple=True)[0]
        at, who, best = token_at[pick], unit[pick], value[pick]
        keys = top_keys(best, token_index[at])
        self.offer(self.top, who, keys, at, who, best, token_index, acts, tokens)

    def entries(
        self,
        groups: torch.Tensor,
        keys: torch.Tensor,
        token_index: torch.Tensor,
        value: torch.Tensor,
        unit: torch.Tensor,
        token_at: torch.Tensor,
        acts: torch.Tensor,
        tokens: torch.Tensor,
    ) -> Entries:
        """Candidates with their context windows gathered from the batch (`-1` tokens outside the row)."""
        positions = acts.shape[1]
        row, position = token_at // positions, token_at % positions
        offsets = torch.arange(-self.config.left, self.config.right + 1, device=acts.device)
        at = position[:, None] + offsets  # [n, window]
        inside = (at >= 0) & (at < positions)
        at = at.clamp(0, positions - 1)
        context_acts = acts[row[:, None], at, unit[:, None]] * inside
        context_tokens = torch.where(inside, tokens.to(acts.device)[row[:, None], at], -1)
        return Entries(groups, keys, token_index, value, context_tokens.int(), context_acts)

    def absorb(self, other: UnitStats) -> None:
        """Add another pass's summary (over other tokens of the same stream) to this one."""
        if other.n_units != self.n_units or other.config != self.config:
            raise ConfigError("only summaries of the same units with the same config merge")
        if self.context_size and other.context_size and self.context_size != other.context_size:
            raise ConfigError("summaries over different context sizes do not merge")
        self.context_size = self.context_size or other.context_size
        self.tokens += other.tokens
        self.count += other.count
        self.total += other.total
        self.max = torch.maximum(self.max, other.max)
        self.hist += other.hist
        self.top.absorb(other.top)
        self.samples.absorb(other.samples)


def moved(stats: UnitStats, device: torch.device | str) -> UnitStats:
    """A copy of `stats` on `device` (the CPU, to read examples out without a sync per value)."""
    out = copy.copy(stats)
    for name in ("edges", "count", "total", "max", "hist"):
        setattr(out, name, getattr(stats, name).to(device))
    for name in ("top", "samples"):
        reservoir = copy.copy(getattr(stats, name))
        for field in ("keys", "token_index", "values", "tokens", "acts"):
            setattr(reservoir, field, getattr(reservoir, field).to(device))
        setattr(out, name, reservoir)
    return out


def merge(a: UnitStats, b: UnitStats) -> UnitStats:
    """A new summary equal to one pass over both summaries' tokens."""
    merged = copy.deepcopy(a)
    merged.absorb(b)
    return merged


@dataclass(frozen=True)
class Example:
    """One kept example of a unit: its token in context, with the unit's activation on every token."""

    activation: float
    token_index: int  # global: row * context_size + position
    tokens: list[int]  # the context window within the row
    acts: list[float]  # the unit's activation on each of `tokens`
    focus: int  # where the example's token is in `tokens`
    bin: int  # quantile group (0 = weakest) for quantile samples; 0 for top examples
    rank: int  # order within its list (0 = first shown)


def window_example(
    stats: UnitStats,
    value: float,
    token_index: int,
    tokens: list[int],
    acts: list[float],
    bin: int,
    rank: int,
) -> Example:
    """An `Example` from a reservoir slot, padding (-1 tokens beyond the row's ends) removed."""
    start = next(i for i, token in enumerate(tokens) if token >= 0)
    end = max(i for i, token in enumerate(tokens) if token >= 0) + 1
    return Example(
        value, token_index, tokens[start:end], acts[start:end], stats.config.left - start, bin, rank
    )


def slot_lists(reservoir: Reservoir, rows: slice) -> tuple[list[Any], ...]:
    """The fields of a block of reservoir rows as nested Python lists (one conversion, not one per value)."""
    return tuple(
        getattr(reservoir, name)[rows].tolist()
        for name in ("keys", "token_index", "values", "tokens", "acts")
    )


def top_examples(stats: UnitStats, unit: int) -> list[Example]:
    """The unit's top examples, strongest first (equal activations: lower token index first)."""
    [keys], [index], [values], [tokens], [acts] = slot_lists(stats.top, slice(unit, unit + 1))
    return [
        window_example(stats, values[slot], index[slot], tokens[slot], acts[slot], 0, slot)
        for slot in range(len(keys))
        if keys[slot] != EMPTY
    ]


def quantile_groups(hist: torch.Tensor, n_quantiles: int) -> torch.Tensor:
    """`[n_bins]` the quantile group of each histogram bin of one unit: the group its bin's middle
    falls in, by the unit's own cumulative distribution (-1 for an empty bin)."""
    counts = hist.double()
    total = counts.sum().clamp(min=1)
    middle = (counts.cumsum(0) - counts / 2) / total
    groups = (middle * n_quantiles).floor().long().clamp(max=n_quantiles - 1)
    return torch.where(hist > 0, groups, -1)


def quantile_examples(
    stats: UnitStats, unit: int, n_quantiles: int = 5, per_quantile: int = 5
) -> list[Example]:
    """Seeded samples from `n_quantiles` activation quantiles of the unit, weakest group first:
    each group's samples are the union of its bins' samples, the `per_quantile` smallest keys kept."""
    n_bins = stats.hist.shape[1]
    groups = quantile_groups(stats.hist[unit], n_quantiles).tolist()
    keys, index, values, tokens, acts = slot_lists(stats.samples, slice(unit * n_bins, (unit + 1) * n_bins))
    found = []
    for group in range(n_quantiles):
        slots = sorted(
            (keys[b][slot], index[b][slot], b, slot)
            for b in range(n_bins)
            if groups[b] == group
            for slot in range(len(keys[b]))
            if keys[b][slot] != EMPTY
        )
        found += [
            window_example(stats, values[b][slot], token, tokens[b][slot], acts[b][slot], group, rank)
            for rank, (_, token, b, slot) in enumerate(slots[:per_quantile])
        ]
    return found
