"""Training an SAE or transcoder on activations: `fit(activations, ...)`, no model involved.

Reproducible bit for bit on the CPU from `seed`; checkpoints are written atomically and a killed
run resumes from its last one to the same final weights. Inputs are scaled to E‖x‖² = d_in while
training and the scale is folded back into the weights, so the returned SAE works on raw activations.

Under torchrun the same code trains data parallel (docs/distributed.md): `batch_size` is each rank's
batch, the global batch is `batch_size × world size`, gradients (and the step's fired latents and
terms) are averaged over the ranks before the optimiser step, and only rank 0 writes. In one process
every collective is a no-op and the numbers are those of single-process training. With
`parallel="latents"` each rank instead holds a slice of the dictionary and sees every batch
(`rama.sae.latent_sharding`, docs/scale-latent-sharding.md).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rama.activations import STATS_SAMPLE_TOKENS, BatchSource, TensorBatches
from rama.atomic import staged_file, write_text
from rama.distributed import (
    all_reduce_mean,
    all_reduce_tensor,
    broadcast_object,
    broadcast_tensors,
    is_main,
    setup_distributed,
    world,
)
from rama.errors import ConfigError, InputError
from rama.sae.base import SAE, SAEConfig, TrainState
from rama.sae.latent_sharding import (
    MODE as SHARDED_MODE,
)
from rama.sae.latent_sharding import (
    LatentShard,
    ShardLayout,
    check_shardable,
    gather_state,
    param_names,
    shard_optimizer_state,
    whole_sae,
)
from rama.sae.topk import warn_if_emulated_bf16
from rama.sae.train_config import TrainConfig, resume_differences

__all__ = ["TrainConfig", "fit"]

# Architectures whose loss divides by the batch's target variance (FVU): under data parallelism each
# rank's loss is reweighted so the averaged gradient is that of the global batch's FVU.
VARIANCE_NORMALISED = frozenset({"topk", "batchtopk", "matryoshka"})
PARALLEL_MODE = "data_parallel"  # what a checkpoint records (latent sharding: SHARDED_MODE)
MODE_OPTION = {PARALLEL_MODE: "data", SHARDED_MODE: "latents"}  # recorded mode -> TrainConfig.parallel


def lr_factor(step: int, total: int, warmup: float, decay: float) -> float:
    warm = max(1, int(total * warmup))
    decay_start = int(total * (1 - decay))
    if step < warm:
        return (step + 1) / warm
    if decay > 0 and step >= decay_start:
        return max(0.0, (total - step) / max(1, total - decay_start))
    return 1.0


def geometric_median(points: torch.Tensor, iterations: int = 30) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the summed distance to `points` `[n, d]`."""
    median = points.mean(0)
    for _ in range(iterations):
        weights = 1 / (points - median).norm(dim=1).clamp_min(1e-6)
        median = (weights[:, None] * points).sum(0) / weights.sum()
    return median


def mean_square_scale(data: torch.Tensor) -> float:
    """The factor c with E‖c·x‖² = d."""
    return math.sqrt(data.shape[-1] / data.pow(2).sum(-1).mean().clamp_min(1e-12).item())


def global_scale(sample: torch.Tensor) -> float:
    """`mean_square_scale` over every rank's sample `[n, d]`: the ranks' mean squared norms are
    averaged (equal samples, as most sources give every rank, give the single-process value)."""
    if world().size == 1:
        return mean_square_scale(sample)
    square = sample.pow(2).sum(-1).mean().double().reshape(1)
    all_reduce_mean([square], what="the all-reduce of the normalisation statistics")
    return math.sqrt(sample.shape[-1] / max(float(square[0]), 1e-12))


def build_sae(config: TrainConfig, d_in: int, d_out: int | None, meta: dict[str, Any]) -> SAE:
    """The SAE `config` describes, initialised from `config.seed` (its settings already validated)."""
    cfg = SAEConfig(
        d_in=d_in,
        d_sae=config.d_sae,
        architecture=config.architecture,
        d_out=d_out,
        arch=copy.deepcopy(config.arch),  # `finish` records the final coefficient in the SAE's copy
        skip_connection=config.skip_connection,
        **{**meta, **config.sae_extra},
    )
    torch.manual_seed(config.seed)
    return SAE.create(cfg)


@dataclass
class Run:
    """Everything that changes during training: what a checkpoint holds."""

    sae: SAE
    optimizer: torch.optim.Optimizer
    state: TrainState
    scale_in: float
    scale_out: float
    parallel: dict[str, Any] = field(default_factory=dict)  # how the work is split (`parallel_record`)


def check_device(name: str) -> torch.device:
    """The training device, or a clear error before any activation is harvested or moved."""
    try:
        device: torch.device | None = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {name!r}")
    count = torch.cuda.device_count()
    if device.type == "cuda" and (count == 0 or (device.index or 0) >= count):
        raise ConfigError(
            f"device {name!r} is not available: this machine has {count} CUDA device(s); use 'cpu'"
        )
    return device


def init_run(config: TrainConfig, data: BatchSource, meta: dict[str, Any]) -> Run:
    device = check_device(config.device)
    sample_x = data.inputs[: min(len(data.inputs), STATS_SAMPLE_TOKENS)].to(device).float()
    sample_y = sample_x if data.targets is None else data.targets[: len(sample_x)].to(device).float()
    scale_in = global_scale(sample_x) if config.normalize else 1.0
    scale_out = global_scale(sample_y) if config.normalize and data.targets is not None else scale_in
    d_out = None if data.targets is None else data.targets.shape[1]
    sae = build_sae(config, data.inputs.shape[1], d_out, meta).to(device)  # initialised on the CPU
    init_decoder_bias(sae, sample_y[:8192] * scale_out, config.b_dec_init)
    with torch.no_grad():  # every rank built the same SAE from the same seed and sample: make sure
        broadcast_tensors([*sae.parameters(), *sae.buffers()], what="the broadcast of the initial SAE")
    optimizer = make_optimizer(sae, config)
    dead_after = config.dead_after_tokens or min(1_000_000, config.total_tokens // 4)
    state = TrainState(
        0,
        global_steps(config),
        torch.zeros(config.d_sae, dtype=torch.long, device=device),
        dead_after,
        config.sparsity_warmup_fraction,
        target_l0=config.target_l0,
    )
    return Run(sae, optimizer, state, scale_in, scale_out)


def make_optimizer(sae: SAE, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam; fused (one kernel over every parameter) on the CPU and CUDA, where torch has it: on the
    CPU it made a TopK step at 9,216 latents ~7 % faster than the per-tensor loop (docs/scale-kernels.md)."""
    groups = [{"params": params, "lr_scale": scale} for params, scale in sae.optimizer_groups()]
    fused = sae.W_enc.device.type in ("cpu", "cuda")
    return torch.optim.Adam(groups, lr=config.learning_rate(), betas=(0.9, 0.999), fused=fused or None)


def data_ranks(config: TrainConfig) -> int:
    """Ranks that split the batch: the world size data parallel, 1 latent-sharded (every rank
    sees the whole batch, so batches, steps and token counts are those of one process)."""
    return world().size if config.parallel == "data" else 1


def shard_run(run: Run, config: TrainConfig) -> None:
    """Replace the whole SAE (fresh or resumed) and its optimiser state by this rank's slice."""
    layout = ShardLayout(world().rank, world().size, config.d_sae)
    full_state = run.optimizer.state_dict()
    run.sae = LatentShard(run.sae, layout)
    run.optimizer = make_optimizer(run.sae, config)
    names = param_names(run.optimizer, run.sae)
    run.optimizer.load_state_dict(shard_optimizer_state(full_state, names, layout))


@torch.no_grad()
def init_decoder_bias(sae: SAE, targets: torch.Tensor, how: str) -> None:
    if how == "geometric_median":
        sae.b_dec.copy_(geometric_median(targets))
    elif how == "mean":
        sae.b_dec.copy_(targets.mean(0))
    elif how != "zeros":
        raise ConfigError(f"b_dec_init must be 'geometric_median', 'mean' or 'zeros', not {how!r}")


def global_steps(config: TrainConfig) -> int:
    """Optimiser steps of the run: `total_tokens` over the global batch (`batch_size` per rank)."""
    return max(1, config.total_tokens // (config.batch_size * data_ranks(config)))


def variance_weight(target: torch.Tensor, step: int) -> torch.Tensor:
    """`size · V_rank / V_global` for a batch `[batch, d_out]`: an FVU loss divides by its own
    batch's variance V_rank (about its own mean); times this weight, the ranks' averaged gradient
    is the gradient of the global batch's FVU. One small all-reduce, in float64 so that
    V_global = Σ‖y‖² − N‖mean‖² loses nothing to cancellation."""
    target = target.detach()
    wide = target.double()
    sums = torch.cat([wide.sum(0), wide.new_tensor([target.shape[0]]), wide.pow(2).sum().reshape(1)])
    all_reduce_tensor(sums, what=f"the target-variance all-reduce of step {step}")
    mean = sums[:-2] / sums[-2]
    spread = sums[-1] - sums[-2] * mean.pow(2).sum()
    own = (target - target.mean(0)).pow(2).sum()  # as the loss computes it
    return (world().size * own / spread.clamp_min(1e-12)).to(target.dtype)


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> dict[str, torch.Tensor]:
    """One optimiser step; returns the loss and the architecture's terms as detached 0-d tensors,
    left on the device (`log_record` moves them to the host when a line is logged).

    Data parallel: x and y are this rank's share of the global batch; the gradients, the fired
    latents and the terms are averaged over the ranks in one all-reduce before the step."""
    sae, state = run.sae, run.state
    for group in run.optimizer.param_groups:
        group["lr"] = (
            group["lr_scale"]
            * config.learning_rate()
            * lr_factor(state.step, state.total_steps, config.lr_warmup_fraction, config.lr_decay_fraction)
        )
    device = sae.W_enc.device
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    target = y * run.scale_out
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.autocast == "bfloat16"):
        out = sae.loss(x * run.scale_in, target, state)  # the backward runs outside, as autocast wants
    run.optimizer.zero_grad(set_to_none=True)
    size = data_ranks(config)  # latent-sharded: 1, every rank computes the same loss and terms
    weighted = size > 1 and sae.architecture in VARIANCE_NORMALISED
    (out.loss * variance_weight(target, state.step) if weighted else out.loss).backward()
    terms, fired = {"loss": out.loss.detach(), **out.terms}, out.fired
    if size > 1:
        terms, fired = average_over_ranks(sae, terms, fired, state.step)
    sae.remove_parallel_decoder_grad()
    run.optimizer.step()
    sae.normalize_decoder()
    if size > 1:  # a buffer a loss moved (BatchTopK's threshold estimate) stays one value on every rank
        all_reduce_mean([b for b in sae.buffers() if b.is_floating_point()], what="the buffer all-reduce")
    if config.target_l0 is not None:  # the controller needs the L0 on the host: one sync, only here
        steer_coefficient(state, float(terms["l0"]), config.target_l0, config.target_l0_rate)
    assert state.tokens_since_fired is not None
    state.tokens_since_fired.add_(x.shape[0] * size).masked_fill_(fired, 0)
    state.step += 1
    return terms


def average_over_ranks(
    sae: SAE, terms: dict[str, torch.Tensor], fired: torch.Tensor, step: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Gradients, terms and fired latents `[d_sae]` averaged over the ranks in one collective: a
    latent fired in the global batch if it fired on any rank (its mean is then above 0)."""
    grads = [p.grad for p in sae.parameters() if p.grad is not None]
    terms = {name: value.detach().float().clone().reshape(()) for name, value in terms.items()}
    fired_share = fired.float()
    all_reduce_mean([*grads, fired_share, *terms.values()], what=f"the gradient all-reduce of step {step}")
    return terms, fired_share > 0


def log_record(run: Run, terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """A metrics line: the step's terms moved to the host, with the dead fraction and coefficient."""
    state = run.state
    assert state.tokens_since_fired is not None
    dead = (state.tokens_since_fired >= state.dead_after_tokens).float().mean()
    names = [*terms, "dead_fraction"]
    host = dict(zip(names, torch.stack([*terms.values(), dead]).tolist(), strict=True))  # one transfer
    return {
        "step": state.step,
        "loss": host.pop("loss"),
        "dead_fraction": host.pop("dead_fraction"),
        "coefficient_multiplier": state.coefficient_multiplier,
        **host,
    }


def steer_coefficient(state: TrainState, l0: float, target: float, rate: float) -> None:
    """Multiplicative controller: too many latents firing raises the penalty, too few lowers it.

    Deterministic given the batches, so a run with a target L0 stays reproducible and resumable."""
    miss = math.log(max(l0, 1e-3) / target)
    state.coefficient_multiplier *= math.exp(rate * max(-1.0, min(1.0, miss)))


def fit(
    activations: torch.Tensor | BatchSource,
    targets: torch.Tensor | None = None,
    *,
    config: TrainConfig | None = None,
    metadata: dict[str, Any] | None = None,
    **overrides: Any,
) -> SAE:
    """Train an SAE on `activations [n, d_in]` (a transcoder when `targets [n, d_out]` is given), or
    on a streaming `BatchSource` (see `rama.activations.StreamingBatches`).

    `fit(acts, architecture="topk", d_sae=4096, k=32, total_tokens=2_000_000)`; keyword overrides
    (training settings and the architecture's, as in `TrainConfig.create`) apply on top of `config`.
    With `checkpoint_dir`, a checkpoint there is resumed only if it was trained with the same
    settings (else a ConfigError names the differences). The returned SAE works on raw (unscaled)
    activations, in eval mode.
    """
    config = (config or TrainConfig()).with_settings(**overrides)
    warn_if_emulated_bf16("select_dtype", getattr(config.arch, "select_dtype", "float32"), config.device)
    warn_if_emulated_bf16("autocast", config.autocast, config.device)
    current = setup_distributed(config.device)  # torchrun's process group; nothing in one process
    sharded = config.parallel == "latents"
    if sharded:
        check_shardable(config.architecture, config.d_sae, current.size)
    rank, size = (0, 1) if sharded else (current.rank, current.size)  # latents: every rank every batch
    data: BatchSource = (
        TensorBatches(activations, targets, config.batch_size, config.seed, rank=rank, world_size=size)
        if isinstance(activations, torch.Tensor)
        else activations
    )
    checkpoint = Path(config.checkpoint_dir) / "checkpoint.pt" if config.checkpoint_dir else None
    run = init_run(config, data, metadata or {})
    settings = run_settings(config, metadata or {})
    run.parallel = parallel_record(data, config)
    if checkpoint is not None and resume_exists(checkpoint):
        load_checkpoint(run, checkpoint, settings)
    if sharded:
        shard_run(run, config)
    run_steps(run, data, config, checkpoint if is_main() else None, settings)
    if isinstance(run.sae, LatentShard):
        run.sae = whole_sae(run.sae)
    return finish(run, data.inputs[:STATS_SAMPLE_TOKENS].float())


def resume_exists(checkpoint: Path) -> bool:
    """Whether to resume: rank 0's answer, on every rank (each then reads the same file, so a run
    over several nodes needs its output folder on a filesystem they share)."""
    exists = bool(broadcast_object(checkpoint.exists(), what="the check for a checkpoint to resume"))
    if exists and not checkpoint.exists():
        raise ConfigError(
            f"rank {world().rank} cannot see {str(checkpoint)!r}, which rank 0 resumes from: put the output "
            "folder on a filesystem every node shares"
        )
    return exists


def parallel_record(data: BatchSource, config: TrainConfig) -> dict[str, Any]:
    """How the run splits its work, for its checkpoints. `order` is "global" when every rank strides
    one data order that does not depend on the world size (in-memory epochs over the same tensor on
    every rank): such a run resumes onto any number of processes with the same global batch. A
    latent-sharded run's ranks all read the whole data order ("replicated"): it resumes onto any
    number of processes that divides d_sae."""
    if config.parallel == "latents":
        return {"mode": SHARDED_MODE, "world_size": world().size, "order": "replicated"}
    shared = isinstance(data, TensorBatches) and data.world_size == world().size
    return {"mode": PARALLEL_MODE, "world_size": world().size, "order": "global" if shared else "per_rank"}


def run_steps(
    run: Run, data: BatchSource, config: TrainConfig, checkpoint: Path | None, settings: dict[str, Any]
) -> None:
    """The training loop; `checkpoint` is None on every rank but 0, which alone writes files."""
    metrics_path = checkpoint.parent / "metrics.jsonl" if checkpoint else None
    if metrics_path is not None:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        trim_metrics(metrics_path, run.state.step)
    batches = data.from_step(run.state.step)  # before the bar: a stream fills its buffer here
    shown = config.progress and is_main()
    bar = tqdm(total=run.state.total_steps, initial=run.state.step, disable=not shown, unit="step")
    try:
        _steps(run, batches, config, bar, checkpoint, metrics_path, settings)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # a streaming source stops its harvesting thread here
        bar.close()


def _steps(
    run: Run,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    config: TrainConfig,
    bar: Any,
    checkpoint: Path | None,
    metrics_path: Path | None,
    settings: dict[str, Any],
) -> None:
    start, start_step = time.perf_counter(), run.state.step
    while run.state.step < run.state.total_steps:
        batch = next(batches, None)
        if batch is None:
            raise InputError(
                f"the activation stream ended after {run.state.step} of {run.state.total_steps} steps; "
                f"harvest more tokens than total_tokens, or train on a corpus that holds that many (a stream "
                f"also ends where its corpus does; the built-in one holds about 6 M training tokens)"
            )
        x, y = batch
        terms = train_step(run, x, y, config)
        bar.update(1)
        if run.state.step % config.log_every == 0 or run.state.step == run.state.total_steps:
            record = log_record(run, terms)
            tokens = (run.state.step - start_step) * config.batch_size * data_ranks(config)  # global batch
            rate = tokens / max(time.perf_counter() - start, 1e-9)
            record["tokens_per_s"] = rate
            bar.set_postfix(
                tok_s=f"{rate:.0f}",
                l0=f"{record['l0']:.1f}",
                fvu=f"{record.get('fvu', 0):.3f}",
                dead=f"{record['dead_fraction']:.2f}",
            )
            if metrics_path is not None:
                with open(metrics_path, "a") as handle:
                    handle.write(json.dumps(record) + "\n")
        writes = checkpoint is not None or isinstance(run.sae, LatentShard)  # a shard's ranks all gather
        if writes and run.state.step % config.checkpoint_every == 0:
            save_checkpoint(run, checkpoint, settings)


# the SAE metadata a checkpoint's run is tied to (the site it reads and predicts, the model)
RUN_METADATA = ("model_name", "hook_name", "hook_name_out", "context_size")


def run_settings(config: TrainConfig, metadata: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint records of its run, flat: every training and architecture setting, and
    the model and sites it trains on. A resume compares these (`resume_differences`). `batch_size`
    is recorded as the global batch (per-rank batch × world size; the same in one process), so a
    resume onto another number of processes is compared on what it learns from."""
    global_batch = {"batch_size": config.batch_size * data_ranks(config)}
    return {**config.to_dict(), **global_batch, **{k: metadata.get(k, "") for k in RUN_METADATA}}


def trim_metrics(path: Path, step: int) -> None:
    """After a resume, drop metric lines the resumed run will write again."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
    write_text(path, "\n".join(kept) + "\n" if kept else "")


def save_checkpoint(run: Run, path: Path | None, settings: dict[str, Any]) -> None:
    """Everything a resume needs, with the run's settings, written to a staging file that is renamed
    into place: a run killed mid-write (Ctrl-C included) leaves the previous checkpoint whole.
    Latent-sharded, every rank gathers the whole SAE and optimiser state; rank 0 (`path`) writes it."""
    if isinstance(run.sae, LatentShard):
        sae_state, optimizer_state = gather_state(run.sae, run.optimizer)
    else:
        sae_state, optimizer_state = run.sae.state_dict(), run.optimizer.state_dict()
    if path is None:
        return
    with staged_file(path) as staging:
        torch.save(
            {
                "sae": sae_state,
                "optimizer": optimizer_state,
                "step": run.state.step,
                "tokens_since_fired": run.state.tokens_since_fired,
                "coefficient_multiplier": run.state.coefficient_multiplier,
                "scale_in": run.scale_in,
                "scale_out": run.scale_out,
                "settings": json.dumps(settings),
                "parallel": json.dumps(run.parallel or {"mode": PARALLEL_MODE, "world_size": 1}),
            },
            staging,
        )


def load_checkpoint(run: Run, path: Path, settings: dict[str, Any]) -> None:
    """Resume from `path` if it was trained with `settings` and can resume onto this run's split
    of the work (`check_parallel`); otherwise a ConfigError naming each difference (a checkpoint
    from before settings were recorded is checked by its weights' shapes)."""
    saved = torch.load(path, map_location=run.sae.W_enc.device, weights_only=True)
    check_parallel(path, json.loads(saved.get("parallel", "{}")), run.parallel)
    if "settings" in saved:
        differences = resume_differences(json.loads(saved["settings"]), settings)
        if differences:
            hint = " (batch_size is the global batch: per-rank batch × processes)" if world().size > 1 else ""
            raise ConfigError(
                f"{str(path.parent)!r} holds a checkpoint of another run; it was trained with "
                + "; ".join(differences)
                + f"{hint}. Use another output folder, or delete the checkpoint to start over"
            )
    try:
        run.sae.load_state_dict(saved["sae"])
    except RuntimeError as error:  # an older checkpoint of another width or architecture
        raise ConfigError(
            f"{str(path.parent)!r} holds a checkpoint of an SAE of another shape than this run asks "
            f"(d_sae={run.sae.cfg.d_sae}, architecture {run.sae.architecture!r}): {str(error).splitlines()[-1]}"
        ) from None
    run.optimizer.load_state_dict(saved["optimizer"])
    run.state.step = int(saved["step"])
    run.state.tokens_since_fired = saved["tokens_since_fired"]
    run.state.coefficient_multiplier = float(saved.get("coefficient_multiplier", 1.0))
    run.scale_in, run.scale_out = float(saved["scale_in"]), float(saved["scale_out"])


def check_parallel(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse a checkpoint of another parallel mode, or one written by another number of processes
    unless both runs stride one data order that does not depend on it (in-memory epochs)."""
    mode, size = saved.get("mode", PARALLEL_MODE), int(saved.get("world_size", 1))  # older: one process
    here = current.get("mode", PARALLEL_MODE), int(current.get("world_size", 1))
    if mode != here[0]:
        raise ConfigError(
            f"{str(path.parent)!r} holds a checkpoint of a {mode!r} run; this run is {here[0]!r}. Resume it "
            f"in the mode that wrote it (--parallel {MODE_OPTION.get(mode, mode)}), or use another output folder"
        )
    order = saved.get("order", "per_rank")  # older: per rank
    movable = order == current.get("order") and order in ("global", "replicated")
    if size != here[1] and not movable:
        raise ConfigError(
            f"{str(path.parent)!r} holds a checkpoint written by {size} process(es) and this run has {here[1]}: "
            f"its data order (a stream, a disk cache or per-rank harvests) is split per rank, so it resumes "
            f"only onto {size} (`torchrun --nproc-per-node {size} ...`"
            + (")" if size > 1 else " or no torchrun)")
            + "; only in-memory epochs over the same activations on every rank resume onto another number"
        )


@torch.no_grad()
def finish(run: Run, sample: torch.Tensor) -> SAE:
    """Calibrate on a sample of inputs `[n, d_in]`, record the sparsity coefficient training ended
    at, and fold the training scales into the weights so the SAE reads and writes raw activations."""
    sae = run.sae
    sae.calibrate(sample.to(sae.W_enc.device) * run.scale_in)
    coefficient = sae.training_coefficient
    if coefficient is not None:
        final = getattr(sae.cfg.arch, coefficient) * run.state.coefficient_multiplier
        setattr(sae.cfg.arch, coefficient, final)
    fold_scales(sae, run.scale_in, run.scale_out)
    sae.eval()
    return sae


@torch.no_grad()
def fold_scales(sae: SAE, scale_in: float, scale_out: float) -> None:
    """An SAE trained on (c_in·x -> c_out·y) becomes one on (x -> y) with the same codes."""
    sae.W_enc.mul_(scale_in)
    sae.W_dec.div_(scale_out)
    sae.b_dec.div_(scale_out)
    if sae.W_skip is not None:
        sae.W_skip.mul_(scale_in / scale_out)
    sae.cfg.input_scale = scale_in
