"""Producer–consumer activations: harvest processes fill a bounded ring of shards on disk while
trainers read it. The filesystem is the channel (no server, no locks that a kill can leave behind).

A ring folder holds `ring.json` (model fingerprint, corpus, harvest settings, sites, layout),
`shard-GGGGGG.safetensors` files, `done-P.json` per finished producer and `consumer-C/` per
consumer (`progress.json`, its statistics sample, its resume snapshots). Producer p of P harvests
model batches p, p + P, ... (the harvest's rank striding) in shards of `batches_per_shard` batches;
its shard k is global shard k·P + p, and consumers read global shards in order 0, 1, 2, ..., so what
a consumer sees does not depend on timing. A producer writes shard g only while
g < (the slowest consumer's read head) + capacity: at most `capacity` unread shards exist. A shard
is deleted once every consumer's oldest resume snapshot is past it. Every file is written under a
staging name and renamed (the manifest created with a hard link, so two producers cannot both
create it).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from rama.activations.defaults import SHUFFLE_BUFFER_TOKENS, STATS_SAMPLE_TOKENS
from rama.activations.disk_cache import CacheFileError, CacheMismatchError, cache_key
from rama.activations.harvest import Chunk, HarvestConfig, batches_with_activations, keep_mask
from rama.activations.shuffle import take_rows
from rama.atomic import staged_file, write_text
from rama.errors import ConfigError, InputError
from rama.hooks.model import HookedModel

RING_MANIFEST = "ring.json"
Say = Callable[[str], None]


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RingLayout:
    """How a ring is shared: its producers and consumers, and how much it may hold."""

    producers: int = 1
    consumers: int = 1
    capacity: int = 8  # unread shards on disk at most
    batches_per_shard: int = 32  # model batches per shard (32 × 8 × 128 tokens = 32,768 rows)

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 1:
                raise ConfigError(f"ring {name} must be at least 1, not {value}")


def shard_file(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:06d}.safetensors"


def check_ring(manifest: Mapping[str, Any], expected: Mapping[str, Any], folder: Path) -> None:
    """Refuse a ring whose manifest differs from `expected` in any key `expected` gives."""
    differences = [
        f"{key}: the ring has {manifest.get(key)!r}, this process asks {value!r}"
        for key, value in expected.items()
        if manifest.get(key) != value
    ]
    if differences:
        raise CacheMismatchError(
            f"the activation ring in {str(folder)!r} was set up differently — "
            + "; ".join(differences)
            + ". Give every producer and consumer the same settings, or use another --ring folder."
        )


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise CacheFileError(f"{path} is not valid JSON ({error}); the ring folder is damaged") from error
    return value


def create_manifest(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The ring's manifest: `manifest`, written if the folder has none (a hard link of a staged
    file, which fails if another process created it first), else the one already there."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RING_MANIFEST
    if not path.exists():
        handle, name = tempfile.mkstemp(prefix=f".{RING_MANIFEST}.", dir=folder)
        with os.fdopen(handle, "w") as out:
            out.write(json.dumps(manifest, indent=1))
        try:
            os.link(name, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(name)
    held = read_json(path)
    assert held is not None
    return held


class Ring:
    """A ring folder as producers and consumers see it: who has read what, what may go."""

    def __init__(self, folder: str | Path, manifest: dict[str, Any], poll: float = 0.05) -> None:
        self.folder, self.manifest, self.poll = Path(folder), manifest, poll
        self.layout = RingLayout(
            **{k: int(manifest[k]) for k in ("producers", "consumers", "capacity", "batches_per_shard")}
        )
        self.sites: list[str] = list(manifest["sites"])

    @classmethod
    def open(cls, folder: str | Path, poll: float = 0.05, say: Say = stderr) -> Ring:
        """The ring in `folder`, waiting (polling) until its first producer has created it."""
        path, waited = Path(folder) / RING_MANIFEST, Waiter(say)
        while (manifest := read_json(path)) is None:
            waited.tick(f"waiting for a producer to create {path}")
            time.sleep(poll)
        return cls(folder, manifest, poll)

    def consumer_folder(self, consumer: int) -> Path:
        return self.folder / f"consumer-{consumer}"

    def progress(self, consumer: int) -> dict[str, int]:
        """`read`: shards before it were read; `keep`: the first shard its resume still needs."""
        record = read_json(self.consumer_folder(consumer) / "progress.json")
        return {"read": 0, "keep": 0, **(record or {})}

    def heads(self) -> list[dict[str, int]]:
        return [self.progress(c) for c in range(self.layout.consumers)]

    def done(self, producer: int) -> int | None:
        """How many shards a finished producer wrote; None while it is still running."""
        record = read_json(self.folder / f"done-{producer}.json")
        return None if record is None else int(record["shards"])

    def collect(self) -> None:
        """Delete every shard that each consumer's resume no longer needs."""
        keep = min(head["keep"] for head in self.heads())
        for path in self.folder.glob("shard-*.safetensors"):
            if int(path.name[6:12]) < keep:
                path.unlink(missing_ok=True)

    def shards_on_disk(self) -> list[int]:
        return sorted(int(path.name[6:12]) for path in self.folder.glob("shard-*.safetensors"))

    def skipped(self, index: int) -> bool | None:
        """True when global shard `index` will never exist (its producer finished before it); None
        when every producer has finished and no shard at or after `index` exists: the stream's end."""
        producers = self.layout.producers
        counts = [self.done(p) for p in range(producers)]
        if all(n is not None for n in counts) and all(
            index >= n * producers + p for p, n in enumerate(counts) if n is not None
        ):
            return None
        count = counts[index % producers]
        return count is not None and index // producers >= count

    def load(self, index: int, sites: list[str], deleted_if_missing: bool, say: Say) -> Chunk | None:
        """`{site: [rows, d]}` (float32) of global shard `index`, waiting for it to be written; None
        when it never will be (its producer finished earlier) or the stream has ended."""
        path, waited = shard_file(self.folder, index), Waiter(say)
        while not path.exists():
            skipped = self.skipped(index)
            if skipped is None or skipped:
                return None
            if deleted_if_missing:
                raise CacheFileError(
                    f"{path} was read and then deleted: this consumer cannot replay it. Resume from the "
                    "last checkpoint (with snapshot_every equal to the trainer's checkpoint_every), or use a new ring"
                )
            waited.tick(f"waiting for {path.name} from producer {index % self.layout.producers}")
            time.sleep(self.poll)
        tensors = load_file(str(path))
        return {site: tensors[site].float() for site in sites}


class Waiter:
    """A progress line while polling: at once, then every 30 s."""

    def __init__(self, say: Say, every: float = 30.0) -> None:
        self.say, self.every, self.last = say, every, -every

    def tick(self, message: str) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.say(message)
            self.last = now


def producer_count(layout: RingLayout, config: HarvestConfig, producer: int) -> int:
    """Shards producer `producer` writes for the whole token budget (fewer if the corpus ends first)."""
    batches = len(range(producer, config.model_batches(), layout.producers))
    return -(-batches // layout.batches_per_shard)


def written(ring: Ring, producer: int) -> int:
    """How many shards `producer` has written: those on disk, and those consumers already read."""
    producers = ring.layout.producers
    on_disk = [g // producers + 1 for g in ring.shards_on_disk() if g % producers == producer]
    read = max(head["read"] for head in ring.heads())
    consumed = len(range(producer, read, producers))
    return max([consumed, *on_disk])


def ring_manifest(
    model: HookedModel,
    sites: list[str],
    config: HarvestConfig,
    layout: RingLayout,
    corpus: str | Path | None,
) -> dict[str, Any]:
    """What producers and consumers of one ring must agree on."""
    return {**cache_key(model, config, corpus), "sites": sites, **asdict(layout)}


def produce(
    model: HookedModel,
    sites: list[str],
    folder: str | Path,
    config: HarvestConfig,
    layout: RingLayout,
    producer: int,
    corpus: str | Path | None = None,
    *,
    poll: float = 0.05,
    say: Say = stderr,
) -> int:
    """Harvest producer `producer`'s shards into the ring (resuming after its last one), waiting
    while the ring holds `capacity` unread shards; returns how many shards it has written in all."""
    if not 0 <= producer < layout.producers:
        raise ConfigError(f"producer must be in 0..{layout.producers - 1}, not {producer}")
    folder, sites = Path(folder), model.resolve(sites)
    expected = ring_manifest(model, sites, config, layout, corpus)
    ring = Ring(folder, create_manifest(folder, expected), poll)
    check_ring(ring.manifest, expected, folder)
    if (finished := ring.done(producer)) is not None:
        return finished
    for stale in folder.glob(".shard-*"):
        if int(stale.name[7:13]) % layout.producers == producer:
            stale.unlink(missing_ok=True)  # left by a killed write of this producer
    start, total = written(ring, producer), producer_count(layout, config, producer)
    stream = batches_with_activations(
        model, sites, config, corpus, skip_batches=start * layout.batches_per_shard,
        rank=producer, world_size=layout.producers,
    )  # fmt: skip
    shard = start
    while shard < total:
        index = shard * layout.producers + producer
        wait_for_room(ring, index, say)
        chunk = next_shard(model, stream, config, sites, layout.batches_per_shard)
        if chunk is None:
            break
        with staged_file(shard_file(folder, index)) as staging:
            save_file({site: value.contiguous() for site, value in chunk.items()}, str(staging))
        shard += 1
    write_text(folder / f"done-{producer}.json", json.dumps({"shards": shard}))
    return shard


def wait_for_room(ring: Ring, index: int, say: Say) -> None:
    """Block until global shard `index` fits in the ring (deleting what every consumer is done with)."""
    waited = Waiter(say)
    while True:
        ring.collect()
        if index < min(head["read"] for head in ring.heads()) + ring.layout.capacity:
            return
        waited.tick(f"the ring holds {ring.layout.capacity} unread shards; waiting for consumers")
        time.sleep(ring.poll)


def next_shard(
    model: HookedModel,
    stream: Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]],
    config: HarvestConfig,
    sites: list[str],
    batches: int,
) -> Chunk | None:
    """The kept rows `{site: [rows, d]}` of the stream's next `batches` model batches."""
    parts: dict[str, list[torch.Tensor]] = {site: [] for site in sites}
    dtype = getattr(torch, config.dtype)
    for _, (tokens, acts) in zip(range(batches), stream, strict=False):
        keep = keep_mask(tokens, model.tokenizer, config.exclude_special_tokens)
        for site in sites:
            parts[site].append(acts[site][keep.to(acts[site].device)].to(dtype).cpu())
    if not parts[sites[0]]:
        return None
    return {site: torch.cat(values) for site, values in parts.items()}


class RingReader:
    """A consumer's cursor over the ring's rows in global shard order: `take(n)` rows at a time;
    `position` is (shard, row) of the next row. Loading a shard records it as read."""

    def __init__(
        self, ring: Ring, consumer: int, sites: list[str], position: tuple[int, int], release: bool, say: Say
    ) -> None:
        self.ring, self.consumer, self.sites, self.say = ring, consumer, sites, say
        self.release = release  # no snapshots: a shard is released once the next one is loaded
        self.next, self.loaded, self.loaded_rows = position[0], position[0], 0
        self.pending: list[Chunk] = []
        self.shards = self._shards()
        if position[1] > 0:  # resumed inside a shard: its remainder comes first
            chunk = next(self.shards)
            self.pending.append({site: value[position[1] :] for site, value in chunk.items()})

    def _shards(self) -> Iterator[Chunk]:
        while True:
            index, read = self.next, self.ring.progress(self.consumer)["read"]
            chunk = self.ring.load(index, self.sites, deleted_if_missing=index < read, say=self.say)
            self.next += 1
            if chunk is None:
                if self.ring.skipped(index) is None:
                    return
                continue
            self.loaded, self.loaded_rows = index, next(iter(chunk.values())).shape[0]
            self.record(read=max(read, index + 1), **({"keep": index} if self.release else {}))
            if self.release:
                self.ring.collect()
            yield chunk

    def record(self, **values: int) -> None:
        folder = self.ring.consumer_folder(self.consumer)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "progress.json", json.dumps({**self.ring.progress(self.consumer), **values}))

    def take(self, rows: int) -> Chunk:
        return take_rows(self.shards, self.pending, rows)

    @property
    def position(self) -> tuple[int, int]:
        if self.pending:
            return self.loaded, self.loaded_rows - next(iter(self.pending[0].values())).shape[0]
        return self.next, 0


class RingActivations:
    """A `BatchSource` for `fit` reading a ring: global shard order through a seeded
    draw-and-replace shuffle buffer (the stream's: every row once, batches drawn across the buffer).

    Resume: every `snapshot_every` steps (set it to the trainer's `checkpoint_every`) the consumer
    saves its buffer, generator state and cursor under `consumer-C/`, keeps the last two and lets
    the shards before the older one be deleted; `from_step(s)` restores the newest snapshot at or
    before s and replays to s, giving exactly the batches of an uninterrupted run. Without
    `snapshot_every`, shards are deleted as soon as every consumer has read them and only
    `from_step(0)` on a fresh ring works. `expect` holds manifest values this trainer relies on
    (e.g. `cache_key(model, harvest, corpus)`): any difference is refused before reading."""

    def __init__(
        self,
        folder: str | Path,
        site: str,
        site_out: str | None = None,
        batch_size: int = 4096,
        buffer_tokens: int = SHUFFLE_BUFFER_TOKENS,
        seed: int = 0,
        *,
        consumer: int = 0,
        snapshot_every: int | None = None,
        expect: Mapping[str, Any] | None = None,
        poll: float = 0.05,
        say: Say = stderr,
    ) -> None:
        self.ring = Ring.open(folder, poll, say)
        check_ring(self.ring.manifest, dict(expect or {}), self.ring.folder)
        self.sites = [site] + ([site_out] if site_out else [])
        missing = [s for s in self.sites if s not in self.ring.sites]
        if missing or not 0 <= consumer < self.ring.layout.consumers:
            raise ConfigError(
                f"the ring in {str(folder)!r} holds sites {self.ring.sites} for consumers "
                f"0..{self.ring.layout.consumers - 1}; asked sites {missing or self.sites}, consumer {consumer}"
            )
        if snapshot_every is not None and snapshot_every < 1:
            raise ConfigError(f"snapshot_every must be at least 1 step, not {snapshot_every}")
        self.site, self.site_out, self.consumer, self.say = site, site_out, consumer, say
        self.batch_size, self.seed, self.snapshot_every = batch_size, seed, snapshot_every
        self.capacity = max(buffer_tokens, batch_size)
        self.folder = self.ring.consumer_folder(consumer)
        sample = self.statistics_sample(min(self.capacity, STATS_SAMPLE_TOKENS))
        self.inputs = sample[site]
        self.targets = sample[site_out] if site_out else None

    def statistics_sample(self, rows: int) -> Chunk:
        """The first `rows` rows of the ring (within its first `capacity` shards, so producers are
        never waited on past what the ring may hold), saved so that a restart uses the same ones."""
        path = self.folder / "sample.safetensors"
        if not path.exists():
            limit = self.ring.layout.capacity

            def first_shards() -> Iterator[Chunk]:
                for index in range(limit):
                    chunk = self.ring.load(index, self.sites, deleted_if_missing=False, say=self.say)
                    if chunk is not None:
                        yield chunk

            sample = take_rows(first_shards(), [], rows)
            if not sample:
                raise InputError(f"the ring in {str(self.ring.folder)!r} holds no activations")
            with staged_file(path) as staging:
                save_file({site: value.contiguous() for site, value in sample.items()}, str(staging))
        return load_file(str(path))

    def snapshots(self) -> list[int]:
        return sorted(int(path.name[6:15]) for path in self.folder.glob("state-*.safetensors"))

    def restore(self, step: int) -> tuple[int, Chunk, torch.Generator, tuple[int, int]]:
        """(step, buffer, generator, cursor) of the newest snapshot at or before `step`; the start
        of the ring when there is none."""
        generator = torch.Generator().manual_seed(self.seed)
        usable = [s for s in self.snapshots() if s <= step]
        if not usable:
            return 0, {}, generator, (0, 0)
        path = self.folder / f"state-{usable[-1]:09d}.safetensors"
        tensors = load_file(str(path))
        generator.set_state(tensors.pop("generator"))
        cursor = (int(tensors.pop("shard")), int(tensors.pop("row")))
        return usable[-1], tensors, generator, cursor

    def snapshot(self, step: int, buffer: Chunk, generator: torch.Generator, reader: RingReader) -> None:
        """Save the state before batch `step`, keep the two newest and release older shards."""
        path = self.folder / f"state-{step:09d}.safetensors"
        if not path.exists():
            shard, row = reader.position
            tensors = {**buffer, "generator": generator.get_state(), "shard": torch.tensor(shard),
                       "row": torch.tensor(row)}  # fmt: skip
            with staged_file(path) as staging:
                save_file({name: value.contiguous() for name, value in tensors.items()}, str(staging))
        kept = [s for s in self.snapshots() if s <= step][-2:]
        for old in self.snapshots():
            if old < kept[0]:
                (self.folder / f"state-{old:09d}.safetensors").unlink(missing_ok=True)
        if len(kept) == 2:
            oldest = load_file(str(self.folder / f"state-{kept[0]:09d}.safetensors"))
            reader.record(keep=int(oldest["shard"]))
            self.ring.collect()

    def from_step(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if step > 0 and self.snapshot_every is None:
            raise ConfigError(
                f"consumer {self.consumer} cannot resume at step {step} without snapshots: "
                "pass snapshot_every (the trainer's checkpoint_every)"
            )
        for batch in self.batches(step):
            x = batch[self.site]
            yield x, (batch[self.site_out] if self.site_out else x)

    def batches(self, step: int) -> Iterator[Chunk]:
        index, buffer, generator, cursor = self.restore(step)
        reader = RingReader(
            self.ring, self.consumer, self.sites, cursor, self.snapshot_every is None, self.say
        )
        if index == 0:
            buffer = reader.take(self.capacity)
            if not buffer:
                raise InputError(f"the ring in {str(self.ring.folder)!r} holds no activations")
        while (size := next(iter(buffer.values())).shape[0]) >= self.batch_size:
            if self.snapshot_every and index > 0 and index % self.snapshot_every == 0:
                self.snapshot(index, buffer, generator, reader)
            rows = torch.randperm(size, generator=generator)[: self.batch_size]
            if index >= step:
                yield {site: values[rows] for site, values in buffer.items()}
            buffer = refill(buffer, rows, reader.take(self.batch_size), self.batch_size)
            index += 1


def refill(buffer: Chunk, rows: torch.Tensor, fresh: Chunk, batch_size: int) -> Chunk:
    """The buffer after handing out `rows`: overwritten with `fresh` rows, or, once the ring runs
    dry, without them (plus whatever fresh rows there were), as the stream's buffer does."""
    if fresh and next(iter(fresh.values())).shape[0] == batch_size:
        for site, values in buffer.items():
            values[rows] = fresh[site]
        return buffer
    keep = torch.ones(next(iter(buffer.values())).shape[0], dtype=torch.bool)
    keep[rows] = False
    return {s: torch.cat([v[keep], *([fresh[s]] if fresh else [])]) for s, v in buffer.items()}
