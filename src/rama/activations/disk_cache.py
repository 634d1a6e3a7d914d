"""Harvested activations on disk: written once, re-read by every later run and by other readers.

A cache folder holds `manifest.json` and `shard-NNNNN.safetensors` files, each `{site: [n, d]}`
for every cached site over a whole number of model batches. Shards are written under a staging
name and renamed, and the manifest is rewritten (also atomically) after each one, so a harvest
killed at any moment resumes after its last finished shard and ends with the same files as an
uninterrupted one; the staging file a killed harvest leaves is removed by the next one. One
process writes a cache at a time (a lock); any number read a finished one, writing nothing.
A cache is keyed on the model's weights (a fingerprint), not its name: another checkpoint under the
same path does not reuse it. Every shard path in a manifest must stay inside its folder.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rama.activations.batches import check_rank
from rama.activations.defaults import SHARD_TOKENS, SHUFFLE_BUFFER_TOKENS, STATS_SAMPLE_TOKENS
from rama.activations.harvest import Chunk, HarvestConfig, batches_with_activations, keep_mask
from rama.activations.shuffle import ShuffleBuffer, take_rows
from rama.atomic import write_text
from rama.errors import InputError, RamaError
from rama.hooks.model import HookedModel
from rama.locking import exclusive
from rama.models.fingerprint import weights_fingerprint

MANIFEST = "manifest.json"
STAGING_PATTERNS = (".shard-*.tmp", f".{MANIFEST}.*")  # what a killed harvest can leave behind


class CacheMismatchError(RamaError, ValueError):
    """The folder holds a cache harvested from another model, corpus or settings."""


class CacheFileError(RamaError, ValueError):
    """A cache file is missing, unreadable, or names a path outside its folder."""


def cache_key(model: HookedModel, config: HarvestConfig, corpus: str | Path | None) -> dict[str, Any]:
    """What must match for a cache to be reused (progress display does not matter)."""
    harvest = {k: v for k, v in asdict(config).items() if k != "progress"}
    return {
        "model": model.cfg.name,
        "weights": weights_fingerprint(model.hf),
        "corpus": None if corpus is None else str(corpus),
        "harvest": harvest,
    }


def shard_path(folder: Path, name: object) -> Path:
    """The file a manifest entry names, refused unless it is a plain name inside `folder`."""
    text = str(name)
    pure = PurePosixPath(text)
    inside = (folder / text).resolve().is_relative_to(folder.resolve())
    if not isinstance(name, str) or not text or pure.is_absolute() or ".." in pure.parts or not inside:
        raise CacheFileError(
            f"{folder / MANIFEST} names shard {text!r}, which is not a file inside {str(folder)!r}; "
            "the manifest is damaged or was not written by rama"
        )
    return folder / text


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest (every shard path checked), or None when there is none."""
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
        entries = list(manifest.get("shards", []))
    except (json.JSONDecodeError, TypeError, AttributeError) as error:
        raise CacheFileError(
            f"{path} is not a valid manifest ({error}); delete the folder to harvest again"
        ) from error
    for entry in entries:
        shard_path(folder, entry.get("file") if isinstance(entry, dict) else entry)
    return manifest


def check_reusable(manifest: dict[str, Any], key: dict[str, Any], sites: list[str], folder: Path) -> None:
    """Refuse a cache whose model (name or weights), corpus, harvest settings or sites differ."""
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


def remove_staging(folder: Path) -> list[Path]:
    """Delete the staging files a killed harvest left in `folder`; return what was removed."""
    stale = [path for pattern in STAGING_PATTERNS for path in folder.glob(pattern)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def cache_activations(
    model: HookedModel,
    sites: list[str],
    folder: str | Path,
    config: HarvestConfig | None = None,
    corpus: str | Path | None = None,
    shard_tokens: int = SHARD_TOKENS,
) -> dict[str, Any]:
    """Harvest `sites` into `folder` (or reuse / finish what is there) and return the manifest."""
    config = config or HarvestConfig()
    folder, sites = Path(folder), model.resolve(sites)
    key = cache_key(model, config, corpus)
    manifest = read_manifest(folder)
    if manifest is not None:
        check_reusable(manifest, key, sites, folder)
        if manifest["complete"]:
            return manifest  # reading needs no lock
    with exclusive(folder):
        manifest = read_manifest(folder)  # another writer may have started or finished meanwhile
        if manifest is not None:
            check_reusable(manifest, key, sites, folder)
            if manifest["complete"]:
                return manifest
        else:
            manifest = {**key, "sites": sites, "shards": [], "batches": 0, "tokens": 0, "complete": False}
        folder.mkdir(parents=True, exist_ok=True)
        remove_staging(folder)
        harvest_shards(model, folder, manifest, config, corpus, shard_tokens)
    return manifest


def harvest_shards(
    model: HookedModel,
    folder: Path,
    manifest: dict[str, Any],
    config: HarvestConfig,
    corpus: str | Path | None,
    shard_tokens: int,
) -> None:
    """Harvest the batches `manifest` does not hold yet into shards, then mark it complete."""
    sites, dtype = list(manifest["sites"]), getattr(torch, config.dtype)
    stream = batches_with_activations(model, sites, config, corpus, skip_batches=manifest["batches"])
    parts: dict[str, list[torch.Tensor]] = {site: [] for site in sites}
    batches, rows = 0, 0
    for tokens, acts in stream:
        keep = keep_mask(tokens, model.tokenizer, config.exclude_special_tokens)
        for site in sites:
            parts[site].append(acts[site][keep].to(dtype))
        batches, rows = batches + 1, rows + int(keep.sum())
        if rows >= shard_tokens:
            write_shard(folder, manifest, {s: torch.cat(p) for s, p in parts.items()}, batches)
            parts, batches, rows = {site: [] for site in sites}, 0, 0
    if rows:
        write_shard(folder, manifest, {s: torch.cat(p) for s, p in parts.items()}, batches)
    if manifest["tokens"] == 0:
        raise InputError(f"the corpus gave no batch of {config.batch_size} × {config.context_size} tokens")
    manifest["complete"] = True
    write_text(folder / MANIFEST, json.dumps(manifest, indent=1))


def write_shard(folder: Path, manifest: dict[str, Any], shard: Chunk, batches: int) -> None:
    """Write one shard (staged, then renamed) and the manifest that lists it."""
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
    """`{site: [rows, d]}` (float32) of one shard, checked against the manifest."""
    path = shard_path(folder, entry["file"])
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CacheFileError(
            f"activation shard {path} is unreadable ({error}); delete {folder} and harvest again"
        ) from error
    chunk = {}
    for site in sites:
        value = tensors.get(site)
        if value is None or tuple(value.shape) != (entry["tokens"], dims[site]):
            found = None if value is None else tuple(value.shape)
            raise CacheFileError(
                f"activation shard {path} holds {site} as {found}, the manifest says ({entry['tokens']}, {dims[site]})"
            )
        chunk[site] = value.float()
    return chunk


class ActivationCache:
    """A finished cache folder, opened read-only: any number of readers (training, features,
    probes) may hold it at once, and none writes anything."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        manifest = read_manifest(self.folder)
        if manifest is None or not manifest.get("complete") or not manifest.get("tokens"):
            raise CacheFileError(
                f"{str(self.folder)!r} holds no finished activation cache (no complete {MANIFEST})"
            )
        self.manifest: dict[str, Any] = manifest
        self.sites: list[str] = list(manifest["sites"])
        self.tokens: int = int(manifest["tokens"])

    def check_sites(self, sites: list[str]) -> None:
        absent = [s for s in sites if s not in self.sites]
        if absent:
            raise InputError(f"the cache in {str(self.folder)!r} holds {self.sites}, not {absent}")

    def chunks(
        self, sites: list[str], order: list[int] | None = None, *, rank: int = 0, world_size: int = 1
    ) -> Iterator[Chunk]:
        """Shard by shard (in `order`, default the written order), rows rank, rank + world_size, ...
        of each: the ranks together read every row once."""
        self.check_sites(sites)
        check_rank(rank, world_size)
        entries = self.manifest["shards"]
        for index in range(len(entries)) if order is None else order:
            chunk = load_shard(self.folder, entries[index], sites, self.manifest["dims"])
            yield {site: value[rank::world_size] for site, value in chunk.items()}

    def read(self, sites: list[str]) -> Chunk:
        """Every cached row of `sites`, in memory: `{site: [tokens, d]}`."""
        parts = list(self.chunks(sites))
        return {site: torch.cat([part[site] for part in parts]) for site in sites}


class DiskActivations:
    """A `BatchSource` for `fit` over a finished cache: seeded passes over the shards (their order
    reshuffled each pass) through a draw-and-replace buffer; `from_step(s)` replays up to step s.
    Rank r of `world_size` reads rows r, r + world_size, ... of every shard; `inputs` / `targets`
    are the cache's first rows, the same on every rank. Reading writes nothing."""

    def __init__(
        self,
        folder: str | Path,
        site: str,
        site_out: str | None = None,
        batch_size: int = 4096,
        buffer_tokens: int = SHUFFLE_BUFFER_TOKENS,
        seed: int = 0,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.cache = ActivationCache(folder)
        self.sites = [site] + ([site_out] if site_out else [])
        self.cache.check_sites(self.sites)
        check_rank(rank, world_size)
        self.site, self.site_out, self.seed = site, site_out, seed
        self.rank, self.world_size = rank, world_size
        self.buffer = ShuffleBuffer(max(buffer_tokens, batch_size), batch_size, seed + rank)
        sample = take_rows(self.cache.chunks(self.sites), [], min(STATS_SAMPLE_TOKENS, self.cache.tokens))
        self.inputs = sample[site]
        self.targets = sample[site_out] if site_out else None

    @property
    def manifest(self) -> dict[str, Any]:
        return self.cache.manifest

    def passes(self) -> Iterator[Chunk]:
        """This rank's rows, pass after pass: the written shard order first, then seeded shuffles."""
        count = len(self.manifest["shards"])
        for epoch in itertools.count():
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = list(range(count)) if epoch == 0 else torch.randperm(count, generator=generator).tolist()
            yield from self.cache.chunks(self.sites, order, rank=self.rank, world_size=self.world_size)

    def from_step(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for index, batch in enumerate(self.buffer.batches(self.passes())):
            if index < step:
                continue
            x = batch[self.site]
            yield x, (batch[self.site_out] if self.site_out else x)
