"""Training an SAE or transcoder on activations: `fit(activations, ...)`, no model involved.

Reproducible bit for bit on the CPU from `seed`; checkpoints are written atomically and a killed
run resumes from its last one to the same final weights. Inputs are scaled to E‖x‖² = d_in while
training and the scale is folded back into the weights, so the returned SAE works on raw activations.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rama.activations import STATS_SAMPLE_TOKENS, BatchSource, TensorBatches
from rama.atomic import staged_file, write_text
from rama.errors import ConfigError, InputError
from rama.sae.base import SAE, SAEConfig, TrainState
from rama.sae.train_config import TrainConfig, resume_differences

__all__ = ["TrainConfig", "fit"]


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
    scale_in = mean_square_scale(sample_x) if config.normalize else 1.0
    scale_out = mean_square_scale(sample_y) if config.normalize and data.targets is not None else scale_in
    d_out = None if data.targets is None else data.targets.shape[1]
    sae = build_sae(config, data.inputs.shape[1], d_out, meta).to(device)  # initialised on the CPU
    init_decoder_bias(sae, sample_y[:8192] * scale_out, config.b_dec_init)
    groups = [{"params": params, "lr_scale": scale} for params, scale in sae.optimizer_groups()]
    optimizer = torch.optim.Adam(groups, lr=config.learning_rate(), betas=(0.9, 0.999))
    dead_after = config.dead_after_tokens or min(1_000_000, config.total_tokens // 4)
    state = TrainState(
        0,
        config.total_steps(),
        torch.zeros(config.d_sae, dtype=torch.long, device=device),
        dead_after,
        config.sparsity_warmup_fraction,
        target_l0=config.target_l0,
    )
    return Run(sae, optimizer, state, scale_in, scale_out)


@torch.no_grad()
def init_decoder_bias(sae: SAE, targets: torch.Tensor, how: str) -> None:
    if how == "geometric_median":
        sae.b_dec.copy_(geometric_median(targets))
    elif how == "mean":
        sae.b_dec.copy_(targets.mean(0))
    elif how != "zeros":
        raise ConfigError(f"b_dec_init must be 'geometric_median', 'mean' or 'zeros', not {how!r}")


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> dict[str, torch.Tensor]:
    """One optimiser step; returns the loss and the architecture's terms as detached 0-d tensors,
    left on the device (`log_record` moves them to the host when a line is logged)."""
    sae, state = run.sae, run.state
    for group in run.optimizer.param_groups:
        group["lr"] = (
            group["lr_scale"]
            * config.learning_rate()
            * lr_factor(state.step, state.total_steps, config.lr_warmup_fraction, config.lr_decay_fraction)
        )
    device = sae.W_enc.device
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    out = sae.loss(x * run.scale_in, y * run.scale_out, state)
    run.optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    sae.remove_parallel_decoder_grad()
    run.optimizer.step()
    sae.normalize_decoder()
    if config.target_l0 is not None:  # the controller needs the L0 on the host: one sync, only here
        steer_coefficient(state, float(out.terms["l0"]), config.target_l0, config.target_l0_rate)
    assert state.tokens_since_fired is not None
    state.tokens_since_fired.add_(x.shape[0]).masked_fill_(out.fired, 0)
    state.step += 1
    return {"loss": out.loss.detach(), **out.terms}


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
    data: BatchSource = (
        TensorBatches(activations, targets, config.batch_size, config.seed)
        if isinstance(activations, torch.Tensor)
        else activations
    )
    checkpoint = Path(config.checkpoint_dir) / "checkpoint.pt" if config.checkpoint_dir else None
    run = init_run(config, data, metadata or {})
    settings = run_settings(config, metadata or {})
    if checkpoint is not None and checkpoint.exists():
        load_checkpoint(run, checkpoint, settings)
    run_steps(run, data, config, checkpoint, settings)
    return finish(run, data.inputs[:STATS_SAMPLE_TOKENS].float())


def run_steps(
    run: Run, data: BatchSource, config: TrainConfig, checkpoint: Path | None, settings: dict[str, Any]
) -> None:
    metrics_path = checkpoint.parent / "metrics.jsonl" if checkpoint else None
    if metrics_path is not None:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        trim_metrics(metrics_path, run.state.step)
    batches = data.from_step(run.state.step)  # before the bar: a stream fills its buffer here
    bar = tqdm(total=run.state.total_steps, initial=run.state.step, disable=not config.progress, unit="step")
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
            rate = (run.state.step - start_step) * config.batch_size / max(time.perf_counter() - start, 1e-9)
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
        if checkpoint is not None and run.state.step % config.checkpoint_every == 0:
            save_checkpoint(run, checkpoint, settings)


# the SAE metadata a checkpoint's run is tied to (the site it reads and predicts, the model)
RUN_METADATA = ("model_name", "hook_name", "hook_name_out", "context_size")


def run_settings(config: TrainConfig, metadata: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint records of its run, flat: every training and architecture setting, and
    the model and sites it trains on. A resume compares these (`resume_differences`)."""
    return {**config.to_dict(), **{k: metadata.get(k, "") for k in RUN_METADATA}}


def trim_metrics(path: Path, step: int) -> None:
    """After a resume, drop metric lines the resumed run will write again."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
    write_text(path, "\n".join(kept) + "\n" if kept else "")


def save_checkpoint(run: Run, path: Path, settings: dict[str, Any]) -> None:
    """Everything a resume needs, with the run's settings, written to a staging file that is renamed
    into place: a run killed mid-write (Ctrl-C included) leaves the previous checkpoint whole."""
    with staged_file(path) as staging:
        torch.save(
            {
                "sae": run.sae.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "step": run.state.step,
                "tokens_since_fired": run.state.tokens_since_fired,
                "coefficient_multiplier": run.state.coefficient_multiplier,
                "scale_in": run.scale_in,
                "scale_out": run.scale_out,
                "settings": json.dumps(settings),
            },
            staging,
        )


def load_checkpoint(run: Run, path: Path, settings: dict[str, Any]) -> None:
    """Resume from `path` if it was trained with `settings`; otherwise a ConfigError naming each
    difference (a checkpoint from before settings were recorded is checked by its weights' shapes)."""
    saved = torch.load(path, map_location=run.sae.W_enc.device, weights_only=True)
    if "settings" in saved:
        differences = resume_differences(json.loads(saved["settings"]), settings)
        if differences:
            raise ConfigError(
                f"{str(path.parent)!r} holds a checkpoint of another run; it was trained with "
                + "; ".join(differences)
                + ". Use another output folder, or delete the checkpoint to start over"
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
