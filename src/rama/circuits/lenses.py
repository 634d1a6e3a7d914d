"""Logit lens and tuned lens: what each layer's residual stream would predict if the model stopped there.

The logit lens (nostalgebraist 2020) sends the residual after block l, `blocks.l.hook_resid_post`,
straight through the model's own final norm and unembedding. The tuned lens (Belrose et al. 2023)
first applies a per-layer affine translator `h + A_l h + b_l` (A and b start at zero, so an untrained
tuned lens is the logit lens), trained to minimise KL(final distribution ‖ lens distribution) on a
corpus. The last block's residual already is the model's output, so its translator stays the
identity and both lenses give the model's own logits there.

A tuned lens is a folder: `tuned_lens.safetensors` (`translators.{l}.weight [d_model, d_model]`,
`translators.{l}.bias [d_model]`: the A_l and b_l) and `tuned_lens.json` (the model's name and weights
fingerprint, the sites, the training tokens and settings). Loading it onto a model with another
fingerprint raises `LensMismatchError`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from tqdm import tqdm

from rama.activations.harvest import keep_mask
from rama.atomic import staged_file, write_bytes, write_text
from rama.data import PackConfig, token_batches
from rama.errors import ConfigError, InputError, RamaError
from rama.hooks.model import HookedModel
from rama.interventions.logit_metrics import kl_divergence
from rama.models.fingerprint import weights_fingerprint
from rama.models.sites import block_site
from rama.plotting import pyplot, save_figure
from rama.sae.base import setting

LENS_FORMAT = 1
LENS_WEIGHTS, LENS_METADATA = "tuned_lens.safetensors", "tuned_lens.json"
CHECKPOINT_NAME = "checkpoint.pt"
CorpusSplit = Literal["train", "test", "all"]


class LensMismatchError(RamaError, ValueError):
    """A tuned lens applied to a model it was not trained on."""


# ---- the model's own head: final norm, unembedding ----------------------------------------------


def final_norm(model: HookedModel) -> nn.Module:
    """The HF module behind `ln_final.hook_normalized` (the final RMSNorm / LayerNorm)."""
    spec = model.adapter.final_sites().get("ln_final.hook_normalized")
    if spec is None or not hasattr(spec, "path"):
        raise InputError(f"{model.cfg.model_type} has no final norm site; lenses need a causal LM")
    module = model.hf.get_submodule(spec.path)
    assert isinstance(module, nn.Module)
    return module


def lm_head(model: HookedModel) -> nn.Module:
    """The model's unembedding module; an encoder without an LM head is refused."""
    head = getattr(model.hf, "get_output_embeddings", lambda: None)()
    if head is None or not model.cfg.is_causal:
        raise InputError(
            f"{model.cfg.name or model.cfg.model_type!r} has no LM head; lenses and logit attribution "
            "need a causal language model"
        )
    assert isinstance(head, nn.Module)
    return head


def frozen_call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`module(x)` with its parameters detached: gradients reach `x` but never the model's weights."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return functional_call(module, params, (x,))


def logit_softcap(model: HookedModel) -> float | None:
    """Gemma 2's final logit soft-capping (`tanh(x / c) · c`), or None."""
    config = model.hf.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    cap = getattr(text, "final_logit_softcapping", None)
    return float(cap) if cap else None


def unembed_residual(model: HookedModel, resid: torch.Tensor) -> torch.Tensor:
    """`[..., d_model]` residual → `[..., d_vocab]` logits through the model's final norm and LM head
    (and soft-capping where the model has it), exactly as the model ends its own forward."""
    device = model.device
    logits = frozen_call(lm_head(model), frozen_call(final_norm(model), resid.to(device)))
    cap = logit_softcap(model)
    return logits if cap is None else torch.tanh(logits / cap) * cap


def lens_sites(model: HookedModel) -> list[str]:
    """The residual after every block, `blocks.{l}.hook_resid_post`, l = 0 … n_layers − 1."""
    return [block_site(layer, "hook_resid_post") for layer in range(model.cfg.n_layers)]


# ---- the tuned lens ------------------------------------------------------------------------------


class TunedLens(nn.Module):
    """One affine translator per layer (`h + A h + b`, zero-initialised: the identity)."""

    def __init__(self, d_model: int, sites: list[str], meta: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.sites = list(sites)
        self.translators = nn.ModuleList(nn.Linear(d_model, d_model) for _ in sites)
        for translator in self.translators:
            assert isinstance(translator, nn.Linear)
            nn.init.zeros_(translator.weight)
            nn.init.zeros_(translator.bias)
        self.meta: dict[str, Any] = dict(meta or {})

    @classmethod
    def identity(cls, model: HookedModel) -> TunedLens:
        """An untrained lens for `model`: every translator is the identity (= the logit lens)."""
        meta = {"model": model.cfg.name, "fingerprint": weights_fingerprint(model.hf), "tokens": 0}
        return cls(model.cfg.d_model, lens_sites(model), meta)

    def translate(self, layer: int, resid: torch.Tensor) -> torch.Tensor:
        """`[..., d_model]` → `[..., d_model]`: the residual moved to where the final layer's would be."""
        translator = self.translators[layer]
        assert isinstance(translator, nn.Linear)
        return resid + translator(resid.to(translator.weight.dtype))

    def logits(self, model: HookedModel, layer: int, resid: torch.Tensor) -> torch.Tensor:
        """`[..., d_vocab]`: the tuned lens's prediction from layer `layer`'s residual."""
        return unembed_residual(model, self.translate(layer, resid.to(model.device)))

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write `tuned_lens.safetensors` then `tuned_lens.json` (each atomically) into `folder`."""
        out = Path(folder)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        write_bytes(out / LENS_WEIGHTS, save(tensors))
        record = {"format": LENS_FORMAT, "sites": self.sites, "d_model": self.translators[0].in_features,
                  **self.meta}  # fmt: skip
        write_text(out / LENS_METADATA, json.dumps(record, indent=2) + "\n")
        return out


def load_tuned_lens(folder: str | os.PathLike[str], model: HookedModel) -> TunedLens:
    """A lens folder written by `TunedLens.save`, checked against `model`'s weights fingerprint."""
    path = Path(folder)
    if not (path / LENS_METADATA).is_file() or not (path / LENS_WEIGHTS).is_file():
        raise InputError(
            f"{str(path)!r} is not a tuned-lens folder: it needs {LENS_METADATA} and {LENS_WEIGHTS}"
        )
    try:
        record: dict[str, Any] = json.loads((path / LENS_METADATA).read_text(encoding="utf-8"))
        tensors = load_file(str(path / LENS_WEIGHTS))
    except (json.JSONDecodeError, OSError, RuntimeError) as error:
        raise InputError(f"tuned-lens folder {str(path)!r} is unreadable: {error}") from error
    if record.get("format") != LENS_FORMAT or "fingerprint" not in record or "sites" not in record:
        raise InputError(f"{path / LENS_METADATA} was not written by this rama (format {LENS_FORMAT})")
    actual = weights_fingerprint(model.hf)
    if actual != record["fingerprint"]:
        raise LensMismatchError(
            f"this tuned lens was trained on {record.get('model')!r} (weights fingerprint "
            f"{record['fingerprint']}); the model given ({model.cfg.name!r}) has fingerprint {actual}: "
            "load the model it was trained on, or train a lens for this one (rama circuits lens --train)"
        )
    meta = {k: v for k, v in record.items() if k not in ("format", "sites", "d_model")}
    lens = TunedLens(int(record["d_model"]), list(record["sites"]), meta)
    lens.load_state_dict(tensors)
    return lens.to(model.device)


# ---- training ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TunedLensTraining:
    """How a tuned lens is trained (fields double as `rama circuits lens --train` options)."""

    tokens: int = setting(32_768, "training tokens, from the corpus's train split")
    batch_size: int = setting(2, "contexts per training step")
    context_size: int = setting(128, "tokens per context (each starts with BOS)")
    lr: float = setting(1e-3, "AdamW learning rate, decayed linearly to 0")
    weight_decay: float = setting(1e-3, "AdamW weight decay (pulls each translator towards the identity)")
    seed: int = setting(0, "seed of the corpus order")
    checkpoint_every: int = setting(10, "steps between resumable checkpoints")
    bf16: bool = setting(True, "bfloat16 autocast while training (about 3x faster on a CPU with AVX512-BF16)")
    progress: bool = setting(True, "show progress bars")

    def __post_init__(self) -> None:
        for name in ("tokens", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"tuned-lens {name} must be at least 1, not {getattr(self, name)}")
        if self.context_size < 2:
            raise ConfigError(f"tuned-lens context_size must be at least 2, not {self.context_size}")
        if not self.lr > 0:
            raise ConfigError(f"tuned-lens lr must be above 0, not {self.lr}")

    def steps(self) -> int:
        return max(1, self.tokens // (self.batch_size * self.context_size))


def corpus_batches(model: HookedModel, corpus: str | Path | None, split: CorpusSplit, tokens: int,
                   batch_size: int, context_size: int, seed: int) -> Iterator[torch.Tensor]:  # fmt: skip
    """`[batch, context]` token batches of the corpus's train or held-out split (BOS first)."""
    contexts = max(1, tokens // context_size)  # a shuffle buffer a few times the run, not 2,048 contexts
    pack = PackConfig(
        context_size=context_size, seed=seed, split=split, shuffle_buffer=min(2048, 4 * contexts)
    )
    return token_batches(model.tokenizer, corpus, batch_size=batch_size, config=pack, max_tokens=tokens)


def residuals_and_logits(
    model: HookedModel, tokens: torch.Tensor
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({site: `[n, d_model]`}, final logits `[n, d_vocab]`) at the kept (non-special) positions."""
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, lens_sites(model))
    assert logits is not None
    keep = keep_mask(tokens, model.tokenizer, True).to(logits.device)
    return {site: cache[site][keep] for site in lens_sites(model)}, logits[keep]


def training_step(model: HookedModel, lens: TunedLens, tokens: torch.Tensor, bf16: bool = False) -> float:
    """Accumulate every translator's KL gradient for one batch (layer by layer, so only one layer's
    `[n, d_vocab]` logits live at a time); returns the mean KL over the trained layers. `bf16` runs
    the norm and unembedding under bfloat16 autocast (the KL itself is computed in float32)."""
    resid, final = residuals_and_logits(model, tokens)
    target = final.float().log_softmax(-1)  # [n, d_vocab], once for every layer
    target_p = target.exp()
    trained = lens.sites[:-1]  # the last block's residual is the model's output: identity
    total = 0.0
    for layer, site in enumerate(trained):
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = lens.logits(model, layer, resid[site])
        loss = (target_p * (target - logits.float().log_softmax(-1))).sum(-1).mean()  # KL(final ‖ lens)
        (loss / len(trained)).backward()
        total += float(loss.detach())
    return total / max(len(trained), 1)


def train_settings(
    model: HookedModel, config: TunedLensTraining, corpus: str | Path | None
) -> dict[str, Any]:
    """What a checkpoint records of its run; a resume must match it."""
    return {**asdict(config), "progress": None, "corpus": str(corpus) if corpus else "built-in",
            "fingerprint": weights_fingerprint(model.hf)}  # fmt: skip


def train_tuned_lens(
    model: HookedModel,
    config: TunedLensTraining,
    corpus: str | Path | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
) -> TunedLens:
    """Train every translator (Adam, linear decay to 0) to minimise KL to the final logits on the
    corpus's train split. With `checkpoint_dir`, the state is saved every `checkpoint_every` steps and
    a run with the same settings resumes from it (the token stream is deterministic from `seed`)."""
    torch.manual_seed(config.seed)
    lens = TunedLens.identity(model).to(model.device)
    params = [p for t in lens.translators[:-1] for p in t.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay) if params else None
    steps = config.steps()
    settings = train_settings(model, config, corpus)
    checkpoint = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
    start, losses = resume_point(lens, optimizer, checkpoint, settings)
    batches = corpus_batches(model, corpus, "train", steps * config.batch_size * config.context_size,
                             config.batch_size, config.context_size, config.seed)  # fmt: skip
    bar = tqdm(total=steps, initial=start, desc="tuned lens", unit="step", disable=not config.progress)
    for step, tokens in enumerate(batches):
        if step < start:
            continue
        for group in optimizer.param_groups if optimizer else []:
            group["lr"] = config.lr * (1 - step / steps)
        losses.append(training_step(model, lens, tokens, config.bf16))
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        bar.set_postfix(kl=f"{losses[-1]:.3f}")
        if checkpoint is not None and (step + 1) % config.checkpoint_every == 0:
            save_checkpoint(checkpoint, lens, optimizer, step + 1, losses, settings)
    bar.close()
    if not losses:
        raise InputError(f"the corpus gave no batch of {config.batch_size} × {config.context_size} tokens")
    trained_tokens = len(losses) * config.batch_size * config.context_size
    lens.meta.update({"tokens": trained_tokens, "training": settings, "train_kl": losses})
    return lens


def save_checkpoint(path: Path, lens: TunedLens, optimizer: torch.optim.Optimizer | None, step: int,
                    losses: list[float], settings: dict[str, Any]) -> None:  # fmt: skip
    """Everything a resume needs, written through a staging file (a kill mid-write keeps the last one)."""
    state = {"lens": lens.state_dict(), "optimizer": optimizer.state_dict() if optimizer else None,
             "step": step, "losses": losses, "settings": json.dumps(settings, sort_keys=True)}  # fmt: skip
    with staged_file(path) as staging:
        torch.save(state, staging)


def resume_point(lens: TunedLens, optimizer: torch.optim.Optimizer | None, path: Path | None,
                 settings: dict[str, Any]) -> tuple[int, list[float]]:  # fmt: skip
    """(first step to run, losses so far): 0 and [] without a checkpoint; a checkpoint of another
    run (other settings or model) is refused rather than silently mixed in."""
    if path is None or not path.is_file():
        return 0, []
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = json.loads(state["settings"])
    differences = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
    if differences:
        raise ConfigError(
            f"{str(path.parent)!r} holds a tuned-lens checkpoint of another run (it differs in "
            f"{', '.join(differences)}); use another output folder, or delete it to start over"
        )
    lens.load_state_dict(state["lens"])
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), [float(x) for x in state["losses"]]


def remove_checkpoint(checkpoint_dir: str | os.PathLike[str]) -> None:
    """Drop a finished run's checkpoint folder (the saved lens is what remains)."""
    shutil.rmtree(checkpoint_dir, ignore_errors=True)


# ---- curves on held-out text ---------------------------------------------------------------------


@dataclass(frozen=True)
class LensCurves:
    """Per-layer KL (nats, to the model's final distribution) and next-token perplexity of each lens,
    averaged over `tokens` held-out positions (special tokens and each context's last position left out)."""

    layers: list[int]
    kl: dict[str, list[float]]  # lens name -> [layer]
    perplexity: dict[str, list[float]]  # lens name -> [layer]
    model_perplexity: float
    tokens: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scored_positions(model: HookedModel, tokens: torch.Tensor) -> torch.Tensor:
    """`[batch, pos]`: positions that are not special tokens and have a next token."""
    keep = keep_mask(tokens, model.tokenizer, True)
    keep[:, -1] = False
    return keep


def lens_curves(
    model: HookedModel,
    tuned: TunedLens | None = None,
    tokens: int = 4096,
    corpus: str | Path | None = None,
    batch_size: int = 4,
    context_size: int = 128,
    progress: bool = True,
) -> LensCurves:
    """KL and perplexity by layer for the logit lens (and `tuned`, when given) on held-out text."""
    lenses: dict[str, TunedLens] = {"logit": TunedLens.identity(model).to(model.device)}
    if tuned is not None:
        lenses["tuned"] = tuned
    n_layers = model.cfg.n_layers
    kl = {name: torch.zeros(n_layers, dtype=torch.float64) for name in lenses}
    nll = {name: torch.zeros(n_layers, dtype=torch.float64) for name in lenses}
    model_nll, count = 0.0, 0
    batches = list(corpus_batches(model, corpus, "test", tokens, batch_size, context_size, seed=0))
    if not batches:
        raise InputError(f"the corpus's held-out split gave no batch of {batch_size} × {context_size} tokens")
    for batch in tqdm(batches, desc="lens curves", unit="batch", disable=not progress):
        with torch.no_grad():
            logits, cache = model.run_with_cache(batch, lens_sites(model))
            assert logits is not None
            keep = scored_positions(model, batch).to(logits.device)
            targets = batch.to(logits.device)[:, 1:][keep[:, :-1]]  # [n]: each kept position's next token
            final = logits[keep]  # [n, d_vocab]
            model_nll += float(F.cross_entropy(final.float(), targets, reduction="sum"))
            count += int(targets.numel())
            for name, lens in lenses.items():
                for layer, site in enumerate(lens.sites):
                    predicted = lens.logits(model, layer, cache[site][keep])
                    kl[name][layer] += float(kl_divergence(final, predicted).sum())
                    nll[name][layer] += float(F.cross_entropy(predicted.float(), targets, reduction="sum"))
    return LensCurves(
        layers=list(range(n_layers)),
        kl={name: (values / count).tolist() for name, values in kl.items()},
        perplexity={name: [math.exp(v / count) for v in values.tolist()] for name, values in nll.items()},
        model_perplexity=math.exp(model_nll / count),
        tokens=count,
    )


def lens_figure(curves: LensCurves, path: str | os.PathLike[str], title: str = "") -> Path:
    """Two panels, KL to the final distribution and next-token perplexity by layer (log scales)."""
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    styles: Mapping[str, str] = {"logit": "o-", "tuned": "s-"}
    for name in curves.kl:
        positive = [v if v > 0 else float("nan") for v in curves.kl[name]]  # exactly 0 at the last layer
        left.plot(curves.layers, positive, styles.get(name, "^-"), label=f"{name} lens", markersize=3)
        right.plot(curves.layers, curves.perplexity[name], styles.get(name, "^-"), label=f"{name} lens",
                   markersize=3)  # fmt: skip
    right.axhline(curves.model_perplexity, color="grey", linestyle="--", label="model")
    left.set(yscale="log", xlabel="layer (residual after block)", ylabel="KL(final ‖ lens), nats")
    right.set(yscale="log", xlabel="layer (residual after block)", ylabel="next-token perplexity")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title or f"logit and tuned lens on {curves.tokens:,} held-out tokens")
    return save_figure(figure, path)
