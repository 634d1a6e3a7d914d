"""From text to a trained, evaluated SAE: harvest, train one SAE per job, save it, then evaluate.

An output folder holds `cfg.json` + `sae_weights.safetensors` (SAELens v6 layout), `sparsity.safetensors`,
`metrics.json`, `metrics.jsonl` (training curve), `train_config.json`; `checkpoint/` while training.
Trained work is never thrown away: the SAE is saved before it is evaluated, so a failed or
interrupted evaluation leaves it on disk (`rama sae eval` evaluates it later). One process writes
an output folder at a time (`<out>.lock` beside it); the folders are checked before any work.

Under torchrun (docs/distributed.md) every rank harvests its own stride of the token stream (model
batches r, r + N, ... of N ranks) and trains a replica; rank 0 alone locks and writes the output
folder, its checkpoints and metrics, and evaluates the SAE.
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

from rama.activations import (
    BatchSource,
    DiskActivations,
    HarvestConfig,
    StreamingBatches,
    TensorBatches,
    cache_activations,
    harvest,
    stream_buffer_tokens,
    stream_harvest_tokens,
)
from rama.atomic import remove_stale_staging, write_text
from rama.distributed import all_reduce_tensor, is_main, run_on_main, setup_distributed, world
from rama.errors import ConfigError, OutputError
from rama.hooks.model import HookedModel
from rama.locking import exclusive
from rama.sae.base import SAE
from rama.sae.evaluate import evaluate
from rama.sae.training import TrainConfig, fit, global_steps

SourceKind = Literal["memory", "stream", "disk"]


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

    kind: SourceKind  # "memory": harvest, then epochs; "stream": harvest while training; "disk": cache
    harvest: HarvestConfig
    corpus: str | Path | None = None
    cache: Path | None = None  # the activation-cache folder when kind == "disk"


@dataclass
class Prepared:
    """A job with its batch source, and what preparing the source cost."""

    job: Job
    source: BatchSource
    wait_seconds: float  # spent before training could start (harvest, cache build, stream sample)
    harvested_tokens: int = 0  # rows harvested for it (a stream counts its own while training)
    harvest_seconds: float = 0.0


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
    size = world().size
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
    start = time.perf_counter()
    rank, size = world().rank, world().size
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
    size = world().size
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
        rank=world().rank,
        world_size=size,
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
) -> list[tuple[SAE, dict[str, Any]]]:
    """Several SAEs (sites, widths, sparsities) from one harvest or cache (a stream per job).
    Under torchrun every rank calls it; rank 0 alone locks, checks and writes the output folders."""
    if len({job.out.absolute() for job in jobs}) != len(jobs):
        raise ConfigError("two jobs write the same output folder; give each its own")
    for job in jobs:
        check_output(job.out)
    setup_distributed(jobs[0].config.device)  # torchrun's process group; nothing in one process
    plan = plan_data(jobs, stream=stream, activation_cache=activation_cache,
                     harvest_config=harvest_config, corpus=corpus)  # fmt: skip
    with ExitStack() as locks:
        run_on_main(lambda: lock_outputs(locks, jobs), "the output folders")
        return [
            train_prepared(model, prepared, plan, eval_tokens) for prepared in open_sources(model, jobs, plan)
        ]


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
    size = world().size
    trained_tokens = global_steps(config) * config.batch_size * size
    harvested, harvest_seconds = prepared.harvested_tokens, prepared.harvest_seconds
    if isinstance(source, StreamingBatches):  # harvested while training: count what it really did
        harvested, harvest_seconds = source.harvested_tokens, source.harvest_seconds
    if size > 1:  # every rank's harvest, in the one collective after training
        count = torch.tensor([harvested], dtype=torch.long)
        harvested = int(all_reduce_tensor(count, what="the harvested-token count")[0])
    timing = {
        "tokens": trained_tokens,
        "harvested_tokens": harvested,
        "tokens_per_s": trained_tokens / (prepared.wait_seconds + train_seconds),
        "harvest_seconds": harvest_seconds,
        "train_seconds": train_seconds,
        "data": plan.kind,
        **({"processes": size} if size > 1 else {}),
    }
    if not is_main():  # rank 0 saves and evaluates; the others are done
        return sae, timing
    save_trained(sae, job.out, config)
    eval_config = replace(plan.harvest, tokens=eval_tokens, split="test", progress=config.progress)
    return sae, record_evaluation(sae, model, job.out, eval_config, plan.corpus, timing)


def save_trained(sae: SAE, out: Path, config: TrainConfig) -> None:
    """Save the SAE, its training config and curve; the checkpoint is no longer needed."""
    sae.save(out)
    size = world().size  # a data-parallel run records its split (batch_size is per rank)
    parallel = {"world_size": size, "global_batch_size": config.batch_size * size} if size > 1 else {}
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
