"""The streaming summaries are exact: top examples equal a brute-force sort, and two halves merged equal
one pass bit for bit (counts, max, histograms, top examples, seeded quantile samples)."""

from __future__ import annotations

import math

import pytest
import torch

from rama.errors import ConfigError
from rama.features.summaries import SummaryConfig, UnitStats, merge, quantile_examples, top_examples

ROWS, POSITIONS, UNITS = 12, 16, 6
CONFIG = SummaryConfig(
    top_k=5, left=3, right=2, hist_low=0.01, hist_high=100.0, bins_per_decade=4, samples_per_bin=2
)


def batch_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Activations with many exact ties (rounded to quarters) and many zeros, tokens, and a keep mask
    that drops position 0 of every row (as a BOS would be)."""
    generator = torch.Generator().manual_seed(seed)
    acts = (torch.randn(ROWS, POSITIONS, UNITS, generator=generator) * 2).relu()
    acts = (acts * 4).round() / 4
    acts[..., 5] = acts[..., 5] * 1000  # one unit above the histogram's top edge
    tokens = torch.randint(3, 50, (ROWS, POSITIONS), generator=generator)
    keep = torch.ones(ROWS, POSITIONS, dtype=torch.bool)
    keep[:, 0] = False
    return acts, tokens, keep


def one_pass(
    acts: torch.Tensor, tokens: torch.Tensor, keep: torch.Tensor, batch_rows: int, first: int = 0
) -> UnitStats:
    stats = UnitStats(UNITS, CONFIG)
    for start in range(0, len(acts), batch_rows):
        end = start + batch_rows
        stats.update(acts[start:end], tokens[start:end], keep[start:end], first_row=first + start)
    return stats


def test_top_examples_equal_a_brute_force_sort_ties_to_the_lower_token_index() -> None:
    acts, tokens, keep = batch_data()
    stats = one_pass(acts, tokens, keep, batch_rows=5)  # batches of 5, 5 and 2 rows
    masked = acts * keep[..., None]
    for unit in range(UNITS):
        column = masked[..., unit].flatten()
        firing = [(float(column[i]), i) for i in range(len(column)) if column[i] > 0]
        expected = sorted(firing, key=lambda item: (-item[0], item[1]))[: CONFIG.top_k]
        found = top_examples(stats, unit)
        assert [(e.activation, e.token_index) for e in found] == expected
        for example in found:
            row, position = divmod(example.token_index, POSITIONS)
            start = max(0, position - CONFIG.left)
            end = min(POSITIONS, position + CONFIG.right + 1)
            assert example.tokens == tokens[row, start:end].tolist()
            assert example.acts == masked[row, start:end, unit].tolist()
            assert example.acts[example.focus] == example.activation
    ties = [e.activation for e in top_examples(stats, 0)]
    assert len(set(ties)) < len(ties), "the case must exercise tied activations"


def test_counts_max_histogram_and_mean() -> None:
    acts, tokens, keep = batch_data()
    stats = one_pass(acts, tokens, keep, batch_rows=4)
    masked = (acts * keep[..., None]).reshape(-1, UNITS)
    kept = acts[keep]
    assert stats.tokens == int(keep.sum()) == ROWS * (POSITIONS - 1)
    assert torch.equal(stats.count, (masked > 0).sum(0))
    assert torch.equal(stats.max, kept.amax(0))
    assert torch.allclose(stats.mean, masked.double().sum(0) / (masked > 0).sum(0))
    edges = CONFIG.edges()
    assert len(edges) == 4 * 4 + 1 and edges[0] == pytest.approx(0.01) and edges[-1] == pytest.approx(100.0)
    for unit in range(UNITS):
        values = masked[:, unit][masked[:, unit] > 0]
        expected = torch.bincount(torch.bucketize(values, edges, right=True), minlength=len(edges) + 1)
        assert torch.equal(stats.hist[unit], expected)
    assert stats.hist[5, -1] > 0  # the overflow bin holds unit 5's large values
    assert torch.equal(stats.hist.sum(1), stats.count)


def same_reservoir(a: UnitStats, b: UnitStats, name: str) -> None:
    left, right = getattr(a, name), getattr(b, name)
    for field in ("keys", "token_index", "values", "tokens", "acts"):
        assert torch.equal(getattr(left, field), getattr(right, field)), (name, field)


def test_two_halves_merged_equal_one_pass_bit_for_bit() -> None:
    acts, tokens, keep = batch_data(seed=3)
    whole = one_pass(acts, tokens, keep, batch_rows=3)
    first = one_pass(acts[:7], tokens[:7], keep[:7], batch_rows=2)
    second = one_pass(acts[7:], tokens[7:], keep[7:], batch_rows=5, first=7)
    for merged in (merge(first, second), merge(second, first)):
        assert merged.tokens == whole.tokens
        for name in ("count", "max", "hist"):
            assert torch.equal(getattr(merged, name), getattr(whole, name)), name
        assert torch.allclose(merged.total, whole.total, rtol=1e-12)
        same_reservoir(merged, whole, "top")
        same_reservoir(merged, whole, "samples")
        for unit in range(UNITS):
            assert quantile_examples(merged, unit) == quantile_examples(whole, unit)


def test_quantile_samples_are_seeded_and_cover_the_distribution() -> None:
    acts, tokens, keep = batch_data(seed=1)
    stats = one_pass(acts, tokens, keep, batch_rows=6)
    found = quantile_examples(stats, 0, n_quantiles=4, per_quantile=3)
    assert {e.bin for e in found} == {0, 1, 2, 3}
    weakest = max(e.activation for e in found if e.bin == 0)
    strongest = min(e.activation for e in found if e.bin == 3)
    assert weakest < strongest
    again = quantile_examples(one_pass(acts, tokens, keep, batch_rows=12), 0, n_quantiles=4, per_quantile=3)
    assert again == found  # the batch size does not change which tokens are sampled
    other = UnitStats(UNITS, SummaryConfig(**{**CONFIG.__dict__, "seed": 7}))
    other.update(acts, tokens, keep, first_row=0)
    assert quantile_examples(other, 0, n_quantiles=4, per_quantile=3) != found


def test_bad_settings_and_mismatched_merges_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="top_k"):
        SummaryConfig(top_k=0)
    with pytest.raises(ConfigError, match="hist_low"):
        SummaryConfig(hist_low=10.0, hist_high=1.0)
    with pytest.raises(ConfigError, match="same units"):
        UnitStats(3, CONFIG).absorb(UnitStats(4, CONFIG))
    assert math.isinf(float(UnitStats(2, CONFIG).max[0]))
