"""The on-disk activation cache: equal to an in-memory harvest, reused without running the model,
resumed after an interruption to the same files, and a source `fit` trains from reproducibly."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from rama.activations import CacheMismatchError, DiskActivations, HarvestConfig, cache_activations, harvest
from rama.sae import TrainConfig, fit, train

SITES = ["blocks.1.hook_resid_post", "blocks.1.hook_mlp_out"]
CONFIG = HarvestConfig(tokens=8 * 32 * 6, batch_size=8, context_size=32, progress=False)


def cached(folder: Path) -> dict[str, torch.Tensor]:
    manifest = json.loads((folder / "manifest.json").read_text())
    shards = [load_file(str(folder / entry["file"])) for entry in manifest["shards"]]
    return {site: torch.cat([shard[site] for shard in shards]) for site in manifest["sites"]}


def refuse_forward(activation: torch.Tensor, hook: Any) -> None:
    raise AssertionError("the model ran although the cache was complete")


def test_cache_equals_an_in_memory_harvest_and_is_reused(smollm: Any, tmp_path: Path) -> None:
    manifest = cache_activations(smollm, SITES, tmp_path, CONFIG, shard_tokens=400)
    in_memory = harvest(smollm, SITES, CONFIG)
    on_disk = cached(tmp_path)
    assert manifest["complete"] and len(manifest["shards"]) >= 3
    assert manifest["tokens"] == in_memory[SITES[0]].shape[0]
    assert 8 * 6 * 30 < manifest["tokens"] <= 8 * 6 * 31  # BOS (and any EOS) positions excluded
    assert all(torch.equal(on_disk[site], in_memory[site]) for site in SITES)
    with smollm.hooks([(SITES[0], refuse_forward)]):
        again = cache_activations(smollm, SITES[:1], tmp_path, CONFIG)  # a subset of the sites is fine
    assert again == manifest


def test_an_interrupted_harvest_resumes_to_the_same_files(smollm: Any, tmp_path: Path) -> None:
    cache_activations(smollm, SITES, tmp_path / "whole", CONFIG, shard_tokens=400)
    calls = []

    def interrupt(activation: torch.Tensor, hook: Any) -> None:
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), smollm.hooks([(SITES[0], interrupt)]):
        cache_activations(smollm, SITES, tmp_path / "resumed", CONFIG, shard_tokens=400)
    partial = json.loads((tmp_path / "resumed" / "manifest.json").read_text())
    assert not partial["complete"] and 0 < partial["batches"] < 6
    cache_activations(smollm, SITES, tmp_path / "resumed", CONFIG, shard_tokens=400)
    whole, resumed = cached(tmp_path / "whole"), cached(tmp_path / "resumed")
    assert all(torch.equal(whole[site], resumed[site]) for site in SITES)


def test_a_cache_harvested_differently_or_damaged_is_refused(smollm: Any, tmp_path: Path) -> None:
    cache_activations(smollm, SITES[:1], tmp_path, CONFIG, shard_tokens=400)
    other_seed = HarvestConfig(**{**CONFIG.__dict__, "seed": 5})
    with pytest.raises(CacheMismatchError, match="seed"):
        cache_activations(smollm, SITES[:1], tmp_path, other_seed)
    with pytest.raises(CacheMismatchError, match="not cached"):
        cache_activations(smollm, SITES, tmp_path, CONFIG)
    shard = tmp_path / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"shard-00001\.safetensors is unreadable"):
        source = DiskActivations(tmp_path, SITES[0], batch_size=64, buffer_tokens=64)
        list(itertools.islice(source.from_step(0), 10))
    with pytest.raises(ValueError, match="no finished activation cache"):
        DiskActivations(tmp_path / "nothing", SITES[0])


def test_training_from_the_cache_uses_each_row_once_per_pass_and_is_reproducible(
    smollm: Any, tmp_path: Path
) -> None:
    cache_activations(smollm, SITES, tmp_path, CONFIG, shard_tokens=400)
    rows = cached(tmp_path)[SITES[0]]
    source = DiskActivations(tmp_path, SITES[0], SITES[1], batch_size=64, buffer_tokens=256, seed=1)
    first_pass = itertools.islice(source.from_step(0), rows.shape[0] // 64 - 4)
    drawn = torch.cat([x for x, _ in first_pass])
    # no row twice within a pass: each drawn row occurs at most as often as in the cache (rows repeat
    # in the cache itself where two contexts start with the same token)
    cache_rows, cache_counts = torch.unique(rows, dim=0, return_counts=True)
    drawn_rows, drawn_counts = torch.unique(drawn, dim=0, return_counts=True)
    where = [int((cache_rows == row).all(-1).nonzero()[0, 0]) for row in drawn_rows]
    assert bool((drawn_counts <= cache_counts[where]).all())
    options = dict(architecture="topk", d_sae=64, k=4, batch_size=64, total_tokens=64 * 40, progress=False)
    a = fit(DiskActivations(tmp_path, SITES[0], batch_size=64, seed=1), **options)
    b = fit(DiskActivations(tmp_path, SITES[0], batch_size=64, seed=1), **options)
    assert all(
        torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_a_second_training_run_reuses_the_cache(smollm: Any, tmp_path: Path) -> None:
    config = TrainConfig.create(
        architecture="topk", d_sae=64, k=4, batch_size=64, total_tokens=64 * 20, progress=False
    )
    first, first_metrics = train(
        smollm, SITES[0], tmp_path / "a", config=config, harvest_config=CONFIG, eval_tokens=512,
        activation_cache=tmp_path / "acts",
    )  # fmt: skip
    manifest = tmp_path / "acts" / "manifest.json"
    written = manifest.stat().st_mtime_ns
    second, second_metrics = train(
        smollm, SITES[0], tmp_path / "b", config=config, harvest_config=CONFIG, eval_tokens=512,
        activation_cache=tmp_path / "acts",
    )  # fmt: skip
    cached_tokens = json.loads(manifest.read_text())["tokens"]
    assert first_metrics["harvested_tokens"] == second_metrics["harvested_tokens"] == cached_tokens
    assert manifest.stat().st_mtime_ns == written  # read, not harvested again
    assert torch.equal(first.W_dec, second.W_dec)


def test_streaming_refuses_to_harvest_fewer_tokens_than_it_trains_on(smollm: Any, tmp_path: Path) -> None:
    config = TrainConfig.create(
        architecture="topk", d_sae=64, k=4, batch_size=64, total_tokens=4096, progress=False
    )
    with pytest.raises(ValueError, match=r"harvest_config.tokens \(1,024\) must be at least total_tokens"):
        train(
            smollm,
            SITES[0],
            tmp_path / "a",
            config=config,
            harvest_config=HarvestConfig(tokens=1024),
            stream=True,
        )
    assert not (tmp_path / "a" / "cfg.json").exists()
