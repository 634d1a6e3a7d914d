"""From text to a trained, evaluated SAE: harvest once, train one SAE per (site, config), evaluate.

An output folder holds `cfg.json` + `sae_weights.safetensors` (SAELens v6 layout), `sparsity.safetensors`,
`metrics.json`, `metrics.jsonl` (training curve), `train_config.json`; `checkpoint/` while training.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from rama.atomic import write_text
from rama.hooks.model import HookedModel
from rama.sae.base import SAE
from rama.sae.disk import DiskActivations, cache_activations
from rama.sae.evaluate import evaluate
from rama.sae.harvest import HarvestConfig, harvest
from rama.sae.stream import StreamingBatches
from rama.sae.training import BatchSource, TrainConfig, fit


class OutputExistsError(FileExistsError):
    pass


def check_output(out: Path) -> None:
    if (out / "cfg.json").exists():
        raise OutputExistsError(
            f"{str(out)!r} already holds a trained SAE; choose another --out or delete it first"
        )


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
    stream: bool = False,
    activation_cache: str | Path | None = None,
) -> tuple[SAE, dict[str, Any]]:
    """Train one SAE (or transcoder `site -> site_out`) on the model's activations and evaluate it.

    `stream=True` harvests in a background thread into a shuffle buffer while training: memory stays
    flat however many tokens are used. `activation_cache=DIR` harvests into sharded files in DIR (or
    reuses what an earlier run with the same model, corpus and harvest settings left there) and trains
    from them, also with flat memory. Otherwise activations are harvested first, in memory.
    """
    config = config or TrainConfig()
    if activation_cache is not None:
        return _train_from_cache(
            model, site, site_out, Path(out), config, corpus, harvest_config, eval_tokens, activation_cache
        )
    if stream:
        out = Path(out)
        check_output(out)
        harvest_config = harvest_config or HarvestConfig(tokens=config.total_tokens + 262_144)
        if harvest_config.tokens < config.total_tokens:
            raise ValueError(
                f"stream=True uses each activation once, so harvest_config.tokens "
                f"({harvest_config.tokens:,}) must be at least total_tokens ({config.total_tokens:,}); "
                "for epochs over fewer tokens, train with stream=False or activation_cache=DIR"
            )
        source = StreamingBatches(
            model, site, site_out, harvest_config, config.batch_size, corpus=corpus, seed=config.seed
        )
        return _train_one(
            model, source, None, site, site_out, config, out, corpus, harvest_config, eval_tokens, 0.0
        )
    [result] = train_many(
        model,
        [(site, site_out, config or TrainConfig(), Path(out))],
        corpus=corpus,
        harvest_config=harvest_config,
        eval_tokens=eval_tokens,
    )
    return result


def _train_from_cache(
    model: HookedModel,
    site: str,
    site_out: str | None,
    out: Path,
    config: TrainConfig,
    corpus: str | Path | None,
    harvest_config: HarvestConfig | None,
    eval_tokens: int,
    folder: str | Path,
) -> tuple[SAE, dict[str, Any]]:
    check_output(out)
    harvest_config = harvest_config or HarvestConfig(tokens=config.total_tokens)
    start = time.perf_counter()
    manifest = cache_activations(model, [s for s in (site, site_out) if s], folder, harvest_config, corpus)
    harvest_seconds = time.perf_counter() - start
    source = DiskActivations(folder, site, site_out, config.batch_size, seed=config.seed)
    return _train_one(
        model, source, None, site, site_out, config, out, corpus, harvest_config, eval_tokens, harvest_seconds,
        harvested_tokens=manifest["tokens"],
    )  # fmt: skip


def train_many(
    model: HookedModel,
    jobs: list[tuple[str, str | None, TrainConfig, Path]],
    *,
    corpus: str | Path | None = None,
    harvest_config: HarvestConfig | None = None,
    eval_tokens: int = 16_384,
) -> list[tuple[SAE, dict[str, Any]]]:
    """Several SAEs (sites, widths, sparsities) from one pass over the model."""
    for _, _, _, out in jobs:
        check_output(out)
    sites = sorted({s for site, site_out, _, _ in jobs for s in (site, site_out) if s}, key=model.sites.index)
    tokens = max(config.total_tokens for _, _, config, _ in jobs)
    harvest_config = harvest_config or HarvestConfig(tokens=tokens)
    start = time.perf_counter()
    acts = harvest(model, sites, harvest_config, corpus)
    harvest_seconds = time.perf_counter() - start
    results = []
    for site, site_out, config, out in jobs:
        results.append(
            _train_one(
                model,
                acts[site],
                acts[site_out] if site_out else None,
                site,
                site_out,
                config,
                out,
                corpus,
                harvest_config,
                eval_tokens,
                harvest_seconds,
            )
        )
    return results


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


def save_evaluated(
    sae: SAE,
    model: HookedModel,
    out: Path,
    eval_config: HarvestConfig,
    corpus: str | Path | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Evaluate on held-out text, then save the SAE (with its measured density) and metrics.json."""
    metrics = evaluate(sae, model, corpus=corpus, config=eval_config)
    density = metrics.pop("log10_density")
    metrics |= extra
    sae.save(out, sparsity=density)
    write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def _train_one(
    model: HookedModel,
    inputs: torch.Tensor | BatchSource,
    targets: torch.Tensor | None,
    site: str,
    site_out: str | None,
    config: TrainConfig,
    out: Path,
    corpus: str | Path | None,
    harvest_config: HarvestConfig,
    eval_tokens: int,
    harvest_seconds: float,
    harvested_tokens: int | None = None,
) -> tuple[SAE, dict[str, Any]]:
    config = replace(config, checkpoint_dir=str(out / "checkpoint"))
    meta = sae_metadata(model.cfg.name, site, site_out, harvest_config)
    start = time.perf_counter()
    sae = fit(inputs, targets, config=config, metadata=meta)
    train_seconds = time.perf_counter() - start
    trained_tokens = config.total_steps() * config.batch_size
    eval_config = replace(harvest_config, tokens=eval_tokens, split="test", progress=False)
    timing = {
        "tokens": trained_tokens,
        "harvested_tokens": harvested_tokens
        or int(inputs.shape[0] if isinstance(inputs, torch.Tensor) else trained_tokens),
        "tokens_per_s": trained_tokens / (harvest_seconds + train_seconds),
        "harvest_seconds": harvest_seconds,
        "train_seconds": train_seconds,
    }
    metrics = save_evaluated(sae, model, out, eval_config, corpus, timing)
    write_text(out / "train_config.json", json.dumps(asdict(config), indent=2))
    finished = out / "checkpoint"
    if (finished / "metrics.jsonl").exists():
        os.replace(finished / "metrics.jsonl", out / "metrics.jsonl")
    shutil.rmtree(finished, ignore_errors=True)
    return sae, metrics
