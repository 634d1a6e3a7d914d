"""Sizes the activation pipeline uses unless told otherwise, defined once.

A shuffle buffer mixes tokens from many contexts into each batch (SAELens and sparsify both hold a
few hundred thousand rows); statistics for normalisation and decoder-bias initialisation need far
fewer rows than training. A small run should not wait for a buffer bigger than itself, so the
streaming buffer shrinks to a quarter of the run (at least one batch).
"""

from __future__ import annotations

SHUFFLE_BUFFER_TOKENS = 262_144  # rows (per site) a streaming or disk shuffle buffer holds
STATS_SAMPLE_TOKENS = 65_536  # rows sampled for normalisation statistics and decoder-bias init
SHARD_TOKENS = 32_768  # rows per disk-cache shard (a shard is read whole)


def stream_buffer_tokens(total_tokens: int, batch_size: int) -> int:
    """The shuffle buffer a streaming run of `total_tokens` needs: the default, or a quarter of
    the run when that is smaller (a 20k-token run fills 5k rows, not 262k, before its first step)."""
    return max(batch_size, min(SHUFFLE_BUFFER_TOKENS, total_tokens // 4))


def stream_harvest_tokens(total_tokens: int, batch_size: int) -> int:
    """Tokens to harvest for a streaming run: each activation is used once, and the excluded
    special-token positions (BOS, EOS) must not leave the run short, so one buffer more than it trains on."""
    return total_tokens + stream_buffer_tokens(total_tokens, batch_size)
