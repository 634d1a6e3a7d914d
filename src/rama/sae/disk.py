"""Harvested activations on disk: written once, re-read by every later run on the same data.

A cache folder holds `manifest.json` and `shard-NNNNN.safetensors` files, each `{site: [n, d]}` for
every cached site over a whole number of model batches. Shards are written under a temporary name
and renamed, and the manifest is rewritten (also atomically) after each one, so a harvest killed at
any moment resumes after its last finished shard and ends with the same files as an uninterrupted
one. Reading streams shard by shard through the shuffle buffer: memory is the buffer plus one shard.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from rama.atomic import write_text
from rama.hooks.model import HookedModel
from rama.sae.harvest import HarvestConfig, batches_with_activations, keep_mask
from rama.sae.stream import Chunk, ShuffleBuffer

MANIFEST = "manifest.json"


class CacheMismatchError(ValueError):
    pass


def cache_key(model: HookedModel, config: HarvestConfig, corpus: str | Path | None) -> dict[str, Any]:
    """What must match for a cache to be reused (progress display does not matter)."""
    harvest = {k: v for k, v in asdict(config).items() if k != "progress"}
    return {"model": model.cfg.name, "corpus": None if corpus is None else str(corpus), "harvest": harvest}


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete the folder to harvest again") from error
    return manifest


def check_reusable(manifest: dict[str, Any], key: dict[str, Any], sites: list[str], folder: Path) -> None:
    held = {k: manifest.get(k) for k in key}
    missing = [s for s in sites if s not in manifest.get("sites", [])]
    if held != key or missing:
        differences = [f"{k}: cached {held[k]!r}, asked {key[k]!r}" for k in key if held[k] != key[k]]
        differences += (
            [f"sites {missing} are not cached (it holds {manifest.get('sites')})"] if missing else []
        )
        raise CacheMismatchError(
            f"the activation cache in {str(folder)!r} was harvested differently — "
            + "; ".join(differences)
            + ". Use another folder (or delete this one)."
        )


def cache_activations(
    model: HookedModel,
    sites: list[str],
    folder: str | Path,
    config: HarvestConfig | None = None,
    corpus: str | Path | None = None,
    shard_tokens: int = 32_768,
) -> dict[str, Any]:
    """Harvest `sites` into `folder` (or reuse / finish what is there) and return the manifest."""
    config = config or HarvestConfig()
    folder, sites = Path(folder), model.resolve(sites)
    key = cache_key(model, config, corpus)
    manifest = read_manifest(folder)
    if manifest is not None:
        check_reusable(manifest, key, sites, folder)
        if manifest["complete"]:
            return manifest
        sites = list(manifest["sites"])
    else:
        manifest = {**key, "sites": sites, "shards": [], "batches": 0, "tokens": 0, "complete": False}
    folder.mkdir(parents=True, exist_ok=True)
    _harvest_shards(model, folder, manifest, config, corpus, shard_tokens)
    return manifest


def _harvest_shards(
    model: HookedModel,
    folder: Path,
    manifest: dict[str, Any],
    config: HarvestConfig,
    corpus: str | Path | None,
    shard_tokens: int,
) -> None:
    sites, dtype = list(manifest["sites"]), getattr(torch, config.dtype)
    total = max(1, config.tokens // (config.batch_size * config.context_size))
    bar = tqdm(total=total, initial=manifest["batches"], desc="cache activations", unit="batch",
               disable=not config.progress)  # fmt: skip
    stream = batches_with_activations(model, sites, config, corpus, skip_batches=manifest["batches"])
    parts: dict[str, list[torch.Tensor]] = {site: [] for site in sites}
    batches, rows = 0, 0
    for tokens, acts in stream:
        keep = keep_mask(tokens, model.tokenizer, config.exclude_special_tokens)
        for site in sites:
            parts[site].append(acts[site][keep].to(dtype))
        batches, rows = batches + 1, rows + int(keep.sum())
        bar.update(1)
        if rows >= shard_tokens:
            _write_shard(folder, manifest, {s: torch.cat(p) for s, p in parts.items()}, batches)
            parts, batches, rows = {site: [] for site in sites}, 0, 0
    if rows:
        _write_shard(folder, manifest, {s: torch.cat(p) for s, p in parts.items()}, batches)
    bar.close()
    if manifest["tokens"] == 0:
        raise ValueError(f"the corpus gave no batch of {config.batch_size} × {config.context_size} tokens")
    manifest["complete"] = True
    write_text(folder / MANIFEST, json.dumps(manifest, indent=1))


def _write_shard(
    folder: Path, manifest: dict[str, Any], shard: dict[str, torch.Tensor], batches: int
) -> None:
    name = f"shard-{len(manifest['shards']):05d}.safetensors"
    staging = folder / f".{name}.tmp"
    save_file({site: value.contiguous() for site, value in shard.items()}, str(staging))
    staging.replace(folder / name)
    rows = next(iter(shard.values())).shape[0]
    manifest["shards"].append({"file": name, "tokens": rows})
    manifest["dims"] = {site: value.shape[1] for site, value in shard.items()}
    manifest["batches"] += batches
    manifest["tokens"] += rows
    write_text(folder / MANIFEST, json.dumps(manifest, indent=1))


def load_shard(folder: Path, entry: dict[str, Any], sites: list[str], dims: dict[str, int]) -> Chunk:
    path = folder / entry["file"]
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ValueError(
            f"activation shard {path} is unreadable ({error}); delete {folder} and harvest again"
        ) from error
    chunk = {}
    for site in sites:
        value = tensors.get(site)
        if value is None or tuple(value.shape) != (entry["tokens"], dims[site]):
            found = None if value is None else tuple(value.shape)
            raise ValueError(
                f"activation shard {path} holds {site} as {found}, the manifest says ({entry['tokens']}, {dims[site]})"
            )
        chunk[site] = value.float()
    return chunk


class DiskActivations:
    """A `BatchSource` for `fit` over a finished cache: seeded passes over the shards (their order
    reshuffled each pass) through a draw-and-replace buffer; `from_step(s)` replays up to step s."""

    def __init__(
        self,
        folder: str | Path,
        site: str,
        site_out: str | None = None,
        batch_size: int = 4096,
        buffer_tokens: int = 262_144,
        seed: int = 0,
    ) -> None:
        self.folder = Path(folder)
        manifest = read_manifest(self.folder)
        if manifest is None or not manifest["complete"] or not manifest["tokens"]:
            raise ValueError(
                f"{str(self.folder)!r} holds no finished activation cache (no complete {MANIFEST})"
            )
        self.sites = [site] + ([site_out] if site_out else [])
        absent = [s for s in self.sites if s not in manifest["sites"]]
        if absent:
            raise ValueError(f"the cache in {str(self.folder)!r} holds {manifest['sites']}, not {absent}")
        self.manifest, self.site, self.site_out = manifest, site, site_out
        self.buffer = ShuffleBuffer(max(buffer_tokens, batch_size), batch_size, seed)
        self.seed = seed
        sample = ShuffleBuffer._take(self._shards(), [], min(65_536, manifest["tokens"]))
        self.inputs = sample[site]
        self.targets = sample[site_out] if site_out else None

    def _shards(self) -> Iterator[Chunk]:
        entries, dims = self.manifest["shards"], self.manifest["dims"]
        for epoch in itertools.count():
            order = range(len(entries)) if epoch == 0 else torch.randperm(
                len(entries), generator=torch.Generator().manual_seed(self.seed + epoch)
            ).tolist()  # fmt: skip
            for index in order:
                yield load_shard(self.folder, entries[index], self.sites, dims)

    def from_step(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for index, batch in enumerate(self.buffer.batches(self._shards())):
            if index < step:
                continue
            x = batch[self.site]
            yield x, (batch[self.site_out] if self.site_out else x)
