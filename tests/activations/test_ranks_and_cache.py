"""Harvests, streams and caches across ranks and readers, with a tiny LM over SmolLM2's tokenizer:
ranks partition the token stream; a cache is keyed on weights, read by two readers at once without
writes, refuses manifest paths outside its folder, and cleans what a killed harvest left behind."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from activation_helpers import jsonl_corpus, tiny_lm
from rama.activations import (
    ActivationCache,
    CacheFileError,
    CacheMismatchError,
    DiskActivations,
    HarvestConfig,
    StreamingBatches,
    batches_with_activations,
    cache_activations,
    harvest,
)
from rama.errors import OutputError, RamaError
from rama.locking import exclusive

SITES = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]
CONFIG = HarvestConfig(tokens=4 * 32 * 6, batch_size=4, context_size=32, progress=False)


@pytest.fixture(scope="module")
def lm(smollm: Any) -> Any:
    return tiny_lm(smollm.tokenizer)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return jsonl_corpus(tmp_path_factory.mktemp("corpus") / "docs.jsonl", 150)


def sorted_rows(rows: torch.Tensor) -> torch.Tensor:
    """Rows in a canonical order, to compare multisets of activations."""
    return rows[torch.argsort(rows[:, 0])]


def test_ranks_partition_the_token_batches_and_harvests(lm: Any, corpus: Path) -> None:
    def tokens(rank: int, world: int) -> list[torch.Tensor]:
        return [
            t for t, _ in batches_with_activations(lm, SITES, CONFIG, corpus, rank=rank, world_size=world)
        ]

    whole, even, odd = tokens(0, 1), tokens(0, 2), tokens(1, 2)
    assert len(whole) == 6 and len(even) == len(odd) == 3
    assert all(torch.equal(a, b) for a, b in zip(whole[0::2], even, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(whole[1::2], odd, strict=True))
    one = harvest(lm, SITES, CONFIG, corpus)
    parts = [harvest(lm, SITES, CONFIG, corpus, rank=r, world_size=2) for r in range(2)]
    for site in SITES:
        joined = torch.cat([part[site] for part in parts])
        assert joined.shape == one[site].shape and torch.equal(sorted_rows(joined), sorted_rows(one[site]))


def test_streaming_ranks_harvest_disjoint_shares_and_share_their_statistics(lm: Any, corpus: Path) -> None:
    streams = [
        StreamingBatches(lm, SITES[0], None, CONFIG, 16, 64, corpus, rank=r, world_size=2) for r in range(2)
    ]
    whole = StreamingBatches(lm, SITES[0], None, CONFIG, 16, 64, corpus)
    rows = [torch.cat([c[SITES[0]] for c in stream.chunks()]) for stream in streams]
    everything = torch.cat([c[SITES[0]] for c in whole.chunks()])
    assert torch.equal(sorted_rows(torch.cat(rows)), sorted_rows(everything))
    assert torch.equal(streams[0].inputs, streams[1].inputs)  # every rank initialises the same SAE
    drawn = torch.cat([x for x, _ in streams[1].from_step(0)])
    assert streams[1].harvested_tokens == rows[1].shape[0] and streams[1].harvest_seconds > 0
    assert drawn.shape[0] == rows[1].shape[0] // 16 * 16  # every full batch of its share, once


def test_two_readers_read_the_same_rows_and_write_nothing(lm: Any, corpus: Path, tmp_path: Path) -> None:
    cache_activations(lm, SITES, tmp_path, CONFIG, corpus, shard_tokens=200)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    first, second = ActivationCache(tmp_path), ActivationCache(tmp_path)
    pairs = zip(first.chunks(SITES), second.chunks(SITES[::-1]), strict=True)  # interleaved reads
    assert all(torch.equal(a[site], b[site]) for a, b in pairs for site in SITES)
    sources = [DiskActivations(tmp_path, SITES[0], batch_size=8, rank=r, world_size=2) for r in range(2)]
    one_pass = [torch.cat([c[SITES[0]] for c in source.cache.chunks(SITES[:1], rank=source.rank,
                                                                      world_size=2)]) for source in sources]  # fmt: skip
    assert torch.equal(sorted_rows(torch.cat(one_pass)), sorted_rows(first.read(SITES[:1])[SITES[0]]))
    next(sources[0].from_step(0))
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before  # read-only


def test_the_cache_is_keyed_on_the_weights_not_the_name(smollm: Any, corpus: Path, tmp_path: Path) -> None:
    original = tiny_lm(smollm.tokenizer, seed=0, name="same-path")
    retrained = tiny_lm(smollm.tokenizer, seed=1, name="same-path")
    cache_activations(original, SITES[:1], tmp_path, CONFIG, corpus)
    with pytest.raises(CacheMismatchError, match=r"weights: cached '[0-9a-f]{16}', asked"):
        cache_activations(retrained, SITES[:1], tmp_path, CONFIG, corpus)
    assert cache_activations(tiny_lm(smollm.tokenizer, seed=0, name="same-path"), SITES[:1], tmp_path,
                             CONFIG, corpus)["complete"]  # fmt: skip


def test_manifest_paths_outside_the_folder_are_refused(lm: Any, corpus: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    cache_activations(lm, SITES[:1], folder, CONFIG, corpus)
    manifest = json.loads((folder / "manifest.json").read_text())
    (tmp_path / "outside.safetensors").write_bytes((folder / "shard-00000.safetensors").read_bytes())
    for bad in [
        "../outside.safetensors",
        str(tmp_path / "outside.safetensors"),
        "sub/../../outside.safetensors",
    ]:
        manifest["shards"][0]["file"] = bad
        (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(CacheFileError, match="not a file inside") as refused:
            ActivationCache(folder)
        assert isinstance(refused.value, RamaError)


def test_a_killed_harvest_leaves_no_staging_behind_and_one_writer_at_a_time(
    lm: Any, corpus: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "cache"
    calls = []

    def interrupt(activation: torch.Tensor, hook: Any) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), lm.hooks([(SITES[0], interrupt)]):
        cache_activations(lm, SITES, folder, CONFIG, corpus, shard_tokens=100)
    (folder / ".shard-00009.safetensors.tmp").write_bytes(b"half a shard")  # what a kill -9 leaves
    (folder / ".manifest.json.x1y2z3").write_text("{")
    with exclusive(folder), pytest.raises(OutputError, match="being written by another process"):
        cache_activations(lm, SITES, folder, CONFIG, corpus, shard_tokens=100)
    manifest = cache_activations(lm, SITES, folder, CONFIG, corpus, shard_tokens=100)
    assert manifest["complete"] and not [p for p in os.listdir(folder) if p.startswith(".")]
    assert not (tmp_path / "cache.lock").exists()
    whole = harvest(lm, SITES, CONFIG, corpus)
    assert torch.equal(ActivationCache(folder).read(SITES)[SITES[1]], whole[SITES[1]])
