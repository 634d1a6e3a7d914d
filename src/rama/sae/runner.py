"""From text to a trained, evaluated SAE: harvest, train one SAE per job, save it, then evaluate.

An output folder holds `cfg.json` + `sae_weights.safetensors` (SAELens v6 layout), `sparsity.safetensors`,
`metrics.json`, `metrics.jsonl` (training curve), `train_config.json`; `checkpoint/` while training.
Trained work is never thrown away: the SAE is saved before it is evaluated, so a failed or
interrupted evaluation leaves it on disk (`rama sae eval` evaluates it later). One process writes
an output folder at a time (`<out>.lock` beside it); the folders are checked before any work.

Under torchrun (docs/distributed.md) every rank harvests its own stride of the token stream (model
batches r, r + N, ... of N ranks) and trains a replica; rank 0 alone locks and writes the output
folder, its checkpoints and metrics, and evaluates the SAE.

With `distribute_sites=True` (docs/scale-sites.md) the jobs are instead spread over the ranks
(`site_owners`): every rank runs the model once on its stride for all sites, each site's rows are
gathered to the rank that owns it, in single-process order, and that rank alone trains, writes and
evaluates it as one process would (nothing is written twice).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist

from rama.activations import (
    BatchSource,
    DiskActivations,
    HarvestConfig,
    StreamingBatches,
    TensorBatches,
    cache_activations,
    harvest,
    kept_activations,
    stream_buffer_tokens,
    stream_harvest_tokens,
)
from rama.activations.disk_cache import cache_key
from rama.activations.ring import Ring, RingActivations
from rama.atomic import remove_stale_staging, write_text
from rama.distributed import all_reduce_tensor, alone, is_main, run_on_main, setup_distributed, world
from rama.distributed.collectives import guarded
from rama.errors import ConfigError, InputError, OutputError
from rama.hooks.model import HookedModel
from rama.locking import exclusive
from rama.sae.base import SAE
from rama.sae.evaluate import evaluate
from rama.sae.training import TrainConfig, data_ranks, fit, global_steps

SourceKind = Literal["memory", "stream", "disk", "ring"]


class OutputExistsError(OutputError):
    """The output folder already holds a trained SAE or other files."""


@dataclass(frozen=True)
class Job:
    """One SAE (or transcoder `site -> site_out`) to train, and the folder it is written to."""

    site: str
    out: Path
    config: TrainConfig = field(default_factory=TrainConfig)
    site_out: str | None = None


@dataclass(frozen=True)
class DataPlan:
    """How activations reach training, decided once by `plan_data`."""

    kind: SourceKind  # "memory": harvest, then epochs; "stream": harvest while training; "disk": cache;
    harvest: HarvestConfig  # "ring": read what producer processes harvest (its harvest settings)
    corpus: str | Path | None = None
    cache: Path | None = None  # the activation-cache folder when kind == "disk"
    ring: Path | None = None  # the ring folder when kind == "ring"
    consumer: int = 0  # this trainer's consumer index in the ring


@dataclass
class Prepared:
    """A job with its batch source, and what preparing the source cost."""

    job: Job
    source: BatchSource
    wait_seconds: float  # spent before training could start (harvest, cache build, stream sample)
    harvested_tokens: int = 0  # rows harvested for it (a stream counts its own while training)
    harvest_seconds: float = 0.0


def data_world(jobs: list[Job]) -> tuple[int, int]:
    """(rank, world size) the data is strided over: this rank's, except under latent sharding,
    where every rank must see the same tokens (rank 0 of 1). Jobs mixing the two: ConfigError."""
    modes = sorted({job.config.parallel for job in jobs})
    if len(modes) > 1:
        raise ConfigError(f"the jobs mix parallel modes ({', '.join(modes)}); train each mode in its own run")
    return (0, 1) if modes == ["latents"] else (world().rank, world().size)


def site_owners(costs: list[int], size: int) -> list[int]:
    """The rank that trains each job, from its cost (d_sae × (d_in + d_out)): the costliest job
    first (ties: the earlier job) to the least loaded rank (ties: the lowest). Equal costs give
    round-robin: job i to rank i mod size. More ranks than jobs: the extra ranks only harvest."""
    loads = [0] * size
    owners = [0] * len(costs)
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(size), key=lambda r: (loads[r], r))
        owners[index], loads[rank] = rank, loads[rank] + costs[index]
    return owners


def check_output(out: Path) -> None:
    """Refuse, before any work, an output that cannot take a new SAE: a file, a folder that holds a
    trained SAE or other files (an unfinished run's `checkpoint/` is fine: training resumes it),
    or a place that cannot be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{str(out)!r} is a file, not a folder; choose another --out")
    if (out / "cfg.json").exists():
        raise OutputExistsError(
            f"{str(out)!r} already holds a trained SAE (`rama sae eval` evaluates it); "
            "choose another --out or delete it first"
        )
    others = sorted(p.name for p in out.iterdir() if p.name != "checkpoint") if out.is_dir() else []
    if others:
        raise OutputExistsError(
            f"{str(out)!r} already holds files ({', '.join(others[:4])}); choose another --out or remove them"
        )
    existing = next(p for p in [out, *out.absolute().parents] if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {str(out)!r}: {str(existing)!r} is not writable")


def plan_data(
    jobs: list[Job],
    *,
    stream: bool | None = None,
    activation_cache: str | Path | None = None,
    harvest_config: HarvestConfig | None = None,
    corpus: str | Path | None = None,
) -> DataPlan:
    """The one place that decides where training batches come from, and how many tokens to harvest
    (the library and `rama sae train` share it, and its default: stream).

    - `activation_cache=DIR`: harvest into sharded files in DIR once (or reuse what an earlier run
      with the same model weights, corpus and harvest settings left there); train in epochs over them.
    - `stream=None` (the default): stream, unless fewer tokens are harvested (`harvest_config.tokens`)
      than trained on (`total_tokens`), which means epochs over activations held in memory.
    - `stream=True`: harvest in a background thread into a shuffle buffer no bigger than the run
      needs, while training; each activation is used once (so fewer harvested tokens than trained is
      a ConfigError); memory stays flat.
    - `stream=False`: harvest everything into memory first, then train in seeded epochs over it.
    """
    total = max(job.config.total_tokens for job in jobs)
    batch = max(job.config.batch_size for job in jobs)
    epochs = harvest_config is not None and harvest_config.tokens < total
    if stream and epochs and activation_cache is None:
        raise ConfigError(
            f"stream=True uses each activation once, so harvest_config.tokens "
            f"({harvest_config.tokens if harvest_config else 0:,}) must be at least total_tokens "
            f"({total:,}); for epochs over fewer tokens, leave stream unset or False, or use activation_cache=DIR"
        )
    if activation_cache is not None:
        kind: SourceKind = "disk"
    elif stream is None:
        kind = "memory" if epochs else "stream"
    else:
        kind = "stream" if stream else "memory"
    default_tokens = stream_harvest_tokens(total, batch) if kind == "stream" else total
    size = data_world(jobs)[1]
    if kind == "stream" and size > 1:  # each rank streams total / size tokens through its own buffer,
        model_batch = HarvestConfig.batch_size * HarvestConfig.context_size  # in whole model batches
        per_rank = -(-stream_harvest_tokens(total // size, batch) // model_batch)  # every rank the same
        default_tokens = size * per_rank * model_batch
    harvest_config = harvest_config or HarvestConfig(tokens=default_tokens, seed=jobs[0].config.seed)
    cache = None if activation_cache is None else Path(activation_cache)
    return DataPlan(kind, harvest_config, corpus, cache)


def open_sources(model: HookedModel, jobs: list[Job], plan: DataPlan) -> list[Prepared]:
    """Every job's batch source, as `plan` says (one harvest or one cache serves all jobs). Data
    parallel: each rank harvests model batches rank, rank + N, ... (memory, stream) or reads rows
    rank, rank + N, ... of every cache shard (disk); its shuffling is seeded with seed + rank."""
    sites = sorted({s for job in jobs for s in (job.site, job.site_out) if s}, key=model.sites.index)
    if plan.kind == "stream":
        return [stream_source(model, job, plan) for job in jobs]
    if plan.kind == "ring":
        return [ring_source(model, job, plan) for job in jobs]
    start = time.perf_counter()
    rank, size = data_world(jobs)
    if plan.kind == "disk":
        assert plan.cache is not None
        rows = shared_cache(model, sites, plan)["tokens"]
        seconds = time.perf_counter() - start
        sources: list[BatchSource] = [
            DiskActivations(
                plan.cache,
                job.site,
                job.site_out,
                job.config.batch_size,
                seed=job.config.seed,
                rank=rank,
                world_size=size,
            )
            for job in jobs
        ]
    else:
        acts = harvest(model, sites, plan.harvest, plan.corpus, rank=rank, world_size=size)
        seconds = time.perf_counter() - start
        rows = acts[sites[0]].shape[0]
        sources = [  # each rank's epochs go over its own harvest (one process: seed + 0, as before)
            TensorBatches(
                acts[job.site], acts.get(job.site_out or ""), job.config.batch_size, job.config.seed + rank
            )
            for job in jobs
        ]
    return [Prepared(job, source, seconds, rows, seconds) for job, source in zip(jobs, sources, strict=True)]


def shared_cache(model: HookedModel, sites: list[str], plan: DataPlan) -> dict[str, Any]:
    """The activation cache's manifest, built once: with several ranks, whichever locks the folder
    first harvests it while the others wait on the lock (polling, not in a collective, so a long
    harvest cannot trip the collective timeout) and then reuse it."""
    assert plan.cache is not None
    while True:
        try:
            return cache_activations(model, sites, plan.cache, plan.harvest, plan.corpus)
        except OutputError:
            if world().size == 1:
                raise
            time.sleep(1.0)


def stream_source(model: HookedModel, job: Job, plan: DataPlan) -> Prepared:
    """A stream for one job (this rank's stride of the token stream), its shuffle buffer no bigger
    than the rank's share of the run needs."""
    start = time.perf_counter()
    rank, size = data_world([job])
    buffer = stream_buffer_tokens(job.config.total_tokens // size, job.config.batch_size)
    source = StreamingBatches(
        model,
        job.site,
        job.site_out,
        plan.harvest,
        job.config.batch_size,
        buffer,
        plan.corpus,
        job.config.seed,
        rank=rank,
        world_size=size,
    )
    return Prepared(job, source, time.perf_counter() - start)


def check_ring_run(jobs: list[Job], given: dict[str, bool]) -> None:
    """What a ring consumer cannot be combined with (`given`: option name -> whether it was set),
    refused before the trainer waits on the ring."""
    clashes = [name for name, used in given.items() if used]
    if clashes:
        raise ConfigError(
            f"activation_ring trains on what the ring's producers harvest, with the ring's own settings; "
            f"it takes no {', '.join(clashes)}: leave {'it' if len(clashes) == 1 else 'them'} out"
        )
    if len(jobs) != 1:
        raise ConfigError(
            f"one ring consumer trains one SAE, not {len(jobs)}: start one trainer per SAE, each with its "
            "own ring_consumer index (a ring produced with --consumers N)"
        )
    if world().size > 1:
        raise ConfigError(
            "a ring consumer is one process; under torchrun, give each trainer its own consumer index "
            "instead (rama activations produce --consumers N), or harvest with the stream or a cache"
        )


def ring_plan(jobs: list[Job], folder: str | Path, consumer: int, corpus: str | Path | None) -> DataPlan:
    """The plan of a ring consumer: the ring's harvest settings and corpus (evaluation uses them
    too), once its first producer has created it; a ring too small for the run is refused."""
    manifest = Ring.open(folder).manifest
    if corpus is not None and str(corpus) != manifest["corpus"]:
        raise ConfigError(
            f"the ring in {str(folder)!r} was harvested from corpus {manifest['corpus']!r}, not "
            f"{str(corpus)!r}: leave the corpus out (the ring's is used) or use another ring"
        )
    harvest = HarvestConfig(**manifest["harvest"])
    job = jobs[0]
    needed = stream_harvest_tokens(job.config.total_tokens, job.config.batch_size)
    if harvest.tokens < needed:
        raise ConfigError(
            f"the ring's producers harvest {harvest.tokens:,} tokens; training {job.config.total_tokens:,} "
            f"uses each once and needs {needed:,} (a shuffle buffer's margin for the special tokens left "
            "out): produce more (--tokens) or train on fewer (--total-tokens)"
        )
    return DataPlan("ring", harvest, manifest["corpus"], ring=Path(folder), consumer=consumer)


def ring_source(model: HookedModel, job: Job, plan: DataPlan) -> Prepared:
    """The job's batches from the ring, snapshotted at its checkpoints so that it resumes exactly;
    a ring harvested from another model (or other weights) is refused before reading."""
    assert plan.ring is not None
    start, config = time.perf_counter(), job.config
    key = cache_key(model, plan.harvest, plan.corpus)
    source = RingActivations(
        plan.ring,
        job.site,
        job.site_out,
        config.batch_size,
        stream_buffer_tokens(config.total_tokens, config.batch_size),
        config.seed,
        consumer=plan.consumer,
        snapshot_every=config.checkpoint_every,
        expect={"model": key["model"], "weights": key["weights"]},
    )
    return Prepared(job, source, time.perf_counter() - start)


def train(
    model: HookedModel,
    site: str,
    out: str | Path,
    *,
    config: TrainConfig | None = None,
    corpus: str | Path | None = None,
    harvest_config: HarvestConfig | None = None,
    eval_tokens: int = 16_384,
    site_out: str | None = None,
    stream: bool | None = None,
    activation_cache: str | Path | None = None,
) -> tuple[SAE, dict[str, Any]]:
    """Train one SAE (or transcoder `site -> site_out`) on the model's activations, save it, and
    evaluate it on held-out text. Where the activations come from: see `plan_data`."""
    [result] = train_many(
        model,
        [Job(site, Path(out), config or TrainConfig(), site_out)],
        corpus=corpus,
        harvest_config=harvest_config,
        eval_tokens=eval_tokens,
        stream=stream,
        activation_cache=activation_cache,
    )
    return result


def train_many(
    model: HookedModel,
    jobs: list[Job],
    *,
    corpus: str | Path | None = None,
    harvest_config: HarvestConfig | None = None,
    eval_tokens: int = 16_384,
    stream: bool | None = None,
    activation_cache: str | Path | None = None,
    distribute_sites: bool = False,
    activation_ring: str | Path | None = None,
    ring_consumer: int = 0,
) -> list[tuple[SAE, dict[str, Any]]]:
    """Several SAEs (sites, widths, sparsities) from one harvest or cache (a stream per job).
    Under torchrun every rank calls it; rank 0 alone locks, checks and writes the output folders.
    With `distribute_sites`, each job is trained by one rank (`site_owners`) from one shared model
    pass, and each rank returns the results of its own jobs only (in job order). With
    `activation_ring`, one job reads a ring that `rama activations produce` processes fill, as
    consumer `ring_consumer` (see `rama.activations.RingActivations`). `eval_tokens=0` skips the
    held-out evaluation (metrics.json then holds the run's counts and times; `evaluate` runs it later)."""
    if len({job.out.absolute() for job in jobs}) != len(jobs):
        raise ConfigError("two jobs write the same output folder; give each its own")
    if eval_tokens < 0:
        raise ConfigError(f"eval_tokens must be >= 0 (0 skips the held-out evaluation); got {eval_tokens}")
    data_world(jobs)  # refuses a job list mixing parallel modes
    setup_distributed(jobs[0].config.device)  # torchrun's process group; nothing in one process
    if activation_ring is not None:
        check_ring_run(jobs, {"stream": stream is not None, "activation_cache": activation_cache is not None,
                              "harvest_config": harvest_config is not None, "distribute_sites": distribute_sites})  # fmt: skip
    if distribute_sites:
        stream = check_distributed_sites(jobs, stream)
    for job in jobs:
        check_output(job.out)
    if activation_ring is not None:
        plan = ring_plan(jobs, activation_ring, ring_consumer, corpus)
    else:
        plan = plan_data(jobs, stream=stream, activation_cache=activation_cache,
                         harvest_config=harvest_config, corpus=corpus)  # fmt: skip
    with ExitStack() as locks:
        if distribute_sites:
            return train_distributed_sites(model, jobs, plan, eval_tokens, locks)
        run_on_main(lambda: lock_outputs(locks, jobs), "the output folders")
        return [
            train_prepared(model, prepared, plan, eval_tokens) for prepared in open_sources(model, jobs, plan)
        ]


def check_distributed_sites(jobs: list[Job], stream: bool | None) -> bool:
    """The combinations `distribute_sites` supports: data-parallel jobs, harvested in memory (the
    default there) or read from an activation cache. Returns `stream` as it must be (False)."""
    if any(job.config.parallel != "data" for job in jobs):
        raise ConfigError(
            "distribute_sites gives each rank whole SAEs, so it cannot shard one across ranks: use "
            "parallel='latents' without distribute_sites, or distribute_sites with parallel='data'"
        )
    if stream:
        raise ConfigError(
            "distribute_sites harvests in memory or reads an activation cache; it does not stream: "
            "leave stream unset (or False), or pass activation_cache=DIR"
        )
    return False


def train_distributed_sites(
    model: HookedModel, jobs: list[Job], plan: DataPlan, eval_tokens: int, locks: ExitStack
) -> list[tuple[SAE, dict[str, Any]]]:
    """Each rank locks, trains, writes and evaluates its own jobs' folders, alone (no collective)."""
    current = world()
    costs = [job_cost(model, job) for job in jobs]
    owners = site_owners(costs, current.size)
    mine = [job for job, owner in zip(jobs, owners, strict=True) if owner == current.rank]
    failure: BaseException | None = None
    try:
        lock_outputs(locks, mine)
    except BaseException as error:  # re-raised below, once every rank knows
        failure = error
    refused = all_reduce_tensor(
        torch.tensor([failure is not None], dtype=torch.long), what="the output locks"
    )
    if failure is not None:
        raise failure
    if int(refused[0]):
        raise OutputError(f"rank {current.rank}: another rank refused its output folders (see its error)")
    prepared = site_sources(model, jobs, owners, plan)
    results = []
    with alone():
        for item in prepared:
            sae, metrics = train_prepared(model, item, plan, eval_tokens)
            results.append((sae, {**metrics, "processes": current.size, "site_rank": current.rank}))
    return results


def job_cost(model: HookedModel, job: Job) -> int:
    """What training the job costs, relatively: d_sae × (d_in + d_out)."""
    width_in = model.site_shape(job.site)[-1]
    width_out = model.site_shape(job.site_out)[-1] if job.site_out else width_in
    return job.config.d_sae * (width_in + width_out)


def site_sources(model: HookedModel, jobs: list[Job], owners: list[int], plan: DataPlan) -> list[Prepared]:
    """This rank's jobs' batch sources, each over the whole token stream in single-process order."""
    rank = world().rank
    mine = [job for job, owner in zip(jobs, owners, strict=True) if owner == rank]
    start = time.perf_counter()
    if plan.kind == "disk":  # one cache for all sites; each owner reads all of its sites' rows
        assert plan.cache is not None
        sites = sorted({s for job in jobs for s in (job.site, job.site_out) if s}, key=model.sites.index)
        rows = shared_cache(model, sites, plan)["tokens"]
        seconds = time.perf_counter() - start
        return [
            Prepared(
                job,
                DiskActivations(
                    plan.cache, job.site, job.site_out, job.config.batch_size, seed=job.config.seed
                ),
                seconds,
                rows,
                seconds,
            )
            for job in mine
        ]
    acts = gathered_harvest(model, jobs, owners, plan)
    seconds = time.perf_counter() - start
    return [
        Prepared(
            job,
            TensorBatches(
                acts[job.site], acts.get(job.site_out or ""), job.config.batch_size, job.config.seed
            ),
            seconds,
            acts[job.site].shape[0],
            seconds,
        )
        for job in mine
    ]


def gathered_harvest(
    model: HookedModel, jobs: list[Job], owners: list[int], plan: DataPlan
) -> dict[str, torch.Tensor]:
    """`{site: [n_tokens, d]}` of the whole stream for the sites this rank owns: every rank runs the
    model once on its stride (model batches r, r + N, ...) for every site, then each site's rows are
    gathered to each rank that owns a job reading it and put back in model-batch order, so the
    result equals a single-process harvest."""
    current = world()
    sites = sorted({s for job in jobs for s in (job.site, job.site_out) if s}, key=model.sites.index)
    chunks = list(kept_activations(model, sites, plan.harvest, plan.corpus,
                                   rank=current.rank, world_size=current.size))  # fmt: skip
    slots = -(-plan.harvest.model_batches() // current.size)
    counts = torch.zeros(current.size, slots, dtype=torch.long)  # [rank, i]: rows of model batch i·N + rank
    counts[current.rank, : len(chunks)] = torch.tensor(
        [c[sites[0]].shape[0] for c in chunks], dtype=torch.long
    )
    all_reduce_tensor(counts, what="the harvested row counts")
    if int(counts.sum()) == 0:
        raise InputError(
            f"the corpus gave no batch of {plan.harvest.batch_size} × {plan.harvest.context_size} tokens"
        )
    dtype = getattr(torch, plan.harvest.dtype)
    acts: dict[str, torch.Tensor] = {}
    for site in sites:
        readers = sorted(
            {owner for job, owner in zip(jobs, owners, strict=True) if site in (job.site, job.site_out)}
        )
        width = model.site_shape(site)[-1]
        own = torch.cat([c[site].cpu() for c in chunks]) if chunks else torch.zeros(0, width)
        for dst in readers:
            rows = gather_rows(own, counts, dst, f"the gather of {site} to rank {dst}")
            if rows is not None:
                acts[site] = rows.to(dtype)
    return acts


def gather_rows(own: torch.Tensor, counts: torch.Tensor, dst: int, what: str) -> torch.Tensor | None:
    """Every rank's rows `[n_r, d]` on rank `dst`, interleaved back into model-batch order (batch
    i·N + r is rank r's i-th); None on the other ranks. Padded to the largest share (gloo's gather
    takes equal sizes)."""
    current = world()
    totals = counts.sum(1)
    padded = torch.zeros(int(totals.max()), own.shape[1], dtype=torch.float32)
    padded[: own.shape[0]] = own.float()
    parts = [torch.empty_like(padded) for _ in range(current.size)] if current.rank == dst else None
    guarded(what, lambda: dist.gather(padded, parts, dst=dst))
    if parts is None:
        return None
    pieces = [list(part[: int(totals[r])].split(counts[r].tolist())) for r, part in enumerate(parts)]
    ordered = [pieces[r][i] for i in range(counts.shape[1]) for r in range(current.size)]
    return torch.cat(ordered)


def lock_outputs(locks: ExitStack, jobs: list[Job]) -> None:
    for job in jobs:
        locks.enter_context(exclusive(job.out))
        check_output(job.out)  # again, now that no other process can be writing it
        remove_stale_staging(job.out)


def train_prepared(
    model: HookedModel, prepared: Prepared, plan: DataPlan, eval_tokens: int
) -> tuple[SAE, dict[str, Any]]:
    """Train one job from its source, save the SAE, then evaluate it (with a progress bar)."""
    job, source = prepared.job, prepared.source
    config = replace(job.config, checkpoint_dir=str(job.out / "checkpoint"))
    meta = sae_metadata(model.cfg.name, job.site, job.site_out, plan.harvest)
    start = time.perf_counter()
    sae = fit(source, config=config, metadata=meta)
    train_seconds = time.perf_counter() - start
    size = data_ranks(config)  # latent sharding: every rank trains on (and harvests) the same tokens
    trained_tokens = global_steps(config) * config.batch_size * size
    harvested, harvest_seconds = prepared.harvested_tokens, prepared.harvest_seconds
    if isinstance(source, StreamingBatches):  # harvested while training: count what it really did
        harvested, harvest_seconds = source.harvested_tokens, source.harvest_seconds
    if size > 1:  # every rank's own slice, in the one collective after training
        count = torch.tensor([harvested], dtype=torch.long)
        harvested = int(all_reduce_tensor(count, what="the harvested-token count")[0])
    timing = {
        "tokens": trained_tokens,
        "harvested_tokens": harvested,
        "tokens_per_s": trained_tokens / (prepared.wait_seconds + train_seconds),
        "harvest_seconds": harvest_seconds,
        "train_seconds": train_seconds,
        "data": plan.kind,
        **({"processes": world().size} if world().size > 1 else {}),
    }
    if not is_main():  # rank 0 saves and evaluates; the others are done
        return sae, timing
    save_trained(sae, job.out, config)
    if eval_tokens == 0:  # asked to skip it: the counts and times are the metrics
        write_text(job.out / "metrics.json", json.dumps(timing, indent=2))
        return sae, timing
    eval_config = replace(plan.harvest, tokens=eval_tokens, split="test", progress=config.progress)
    return sae, record_evaluation(sae, model, job.out, eval_config, plan.corpus, timing)


def save_trained(sae: SAE, out: Path, config: TrainConfig) -> None:
    """Save the SAE, its training config and curve; the checkpoint is no longer needed."""
    sae.save(out)
    size = world().size  # a run over ranks records its split (data parallel: batch_size is per rank)
    global_batch = config.batch_size * data_ranks(config)
    parallel = {"world_size": size, "global_batch_size": global_batch} if size > 1 else {}
    write_text(out / "train_config.json", json.dumps({**config.to_dict(), **parallel}, indent=2))
    finished = out / "checkpoint"
    if (finished / "metrics.jsonl").exists():
        os.replace(finished / "metrics.jsonl", out / "metrics.jsonl")
    shutil.rmtree(finished, ignore_errors=True)


def sae_metadata(
    model_name: str, site: str, site_out: str | None, harvest_config: HarvestConfig
) -> dict[str, Any]:
    """What `cfg.json` records about where the SAE's activations came from (SAELens's metadata keys)."""
    return {
        "model_name": model_name,
        "hook_name": site,
        "hook_name_out": site_out or "",
        "context_size": harvest_config.context_size,
        "prepend_bos": True,
        "exclude_special_tokens": harvest_config.exclude_special_tokens,
    }


def record_evaluation(
    sae: SAE,
    model: HookedModel,
    out: Path,
    eval_config: HarvestConfig,
    corpus: str | Path | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Evaluate an already saved SAE on held-out text; add its measured density and metrics.json."""
    metrics = evaluate(sae, model, corpus=corpus, config=eval_config)
    density = metrics.pop("log10_density")
    metrics |= extra
    sae.save(out, sparsity=density)
    write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def save_evaluated(
    sae: SAE,
    model: HookedModel,
    out: Path,
    eval_config: HarvestConfig,
    corpus: str | Path | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Save the SAE first (so a failed evaluation keeps it), then evaluate it and record the metrics."""
    sae.save(out)
    return record_evaluation(sae, model, out, eval_config, corpus, extra)
