"""Activation patching (Meng et al. 2022; Wang et al. 2022): run one input, overwrite one component
with its value from another input, measure the metric — for every component of a sweep.

Denoising patches clean activations into the corrupted run (what suffices to restore behaviour);
noising patches corrupted activations into the clean run (what is necessary). Many patches run as
one batch: copy k of the target input carries patch k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from rama.errors import ConfigError, InputError
from rama.hooks import HookFn
from rama.hooks.core import HookPoint
from rama.hooks.model import HookedModel
from rama.interventions.logit_metrics import normalised_score
from rama.models.sites import block_site

Metric = Callable[[torch.Tensor], torch.Tensor]  # logits [batch, pos, vocab] -> scalar
Inputs = torch.Tensor | str | list[str]
# each sweep patches one hook of every block (its site: `block_site(layer, SWEEPS[sweep])`)
SWEEPS = {
    "resid_pre": "hook_resid_pre",
    "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
    "heads": "attn.hook_z",
}
DIRECTIONS = ("denoising", "noising")


@dataclass(frozen=True)
class Patch:
    """One component: a site, and optionally one position and/or one head of it."""

    site: str
    position: int | None = None
    head: int | None = None


@dataclass
class PatchResult:
    """Metric after each patch, `values` shaped by `dims` (e.g. `("layer", "pos")`), with labels."""

    values: torch.Tensor
    dims: tuple[str, ...]
    labels: dict[str, list[str]]
    clean: float
    corrupted: float
    direction: str
    sweep: str = ""

    def normalised(self) -> torch.Tensor:
        """0 = the corrupted run's metric, 1 = the clean run's."""
        return normalised_score(self.values, self.clean, self.corrupted)


def check_sweeps(sweeps: Sequence[str]) -> list[str]:
    """The sweeps, each checked against `SWEEPS`."""
    unknown = [s for s in sweeps if s not in SWEEPS]
    if unknown or not sweeps:
        raise ConfigError(f"unknown sweep(s) {unknown or list(sweeps)}; choose from {', '.join(SWEEPS)}")
    return list(sweeps)


def sweep_sites(sweep: str, layers: Sequence[int]) -> list[str]:
    """The site a sweep patches in each of `layers`."""
    return [block_site(layer, SWEEPS[sweep]) for layer in layers]


def check_pair(clean: torch.Tensor, corrupted: torch.Tensor) -> None:
    """Patching swaps values position by position, so the two token batches must line up."""
    if clean.shape != corrupted.shape:
        raise InputError(
            f"clean and corrupted inputs must have the same shape, position by position; got "
            f"{tuple(clean.shape)} and {tuple(corrupted.shape)}"
        )


def source_and_target(
    model: HookedModel, clean: Inputs, corrupted: Inputs, direction: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(clean tokens, source tokens, target tokens): denoising patches clean values into the
    corrupted run, noising corrupted values into the clean run."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction must be 'denoising' or 'noising'; got {direction!r}")
    clean_tokens, corrupted_tokens = model.to_tokens(clean), model.to_tokens(corrupted)
    check_pair(clean_tokens, corrupted_tokens)
    if direction == "denoising":
        return clean_tokens, clean_tokens, corrupted_tokens
    return clean_tokens, corrupted_tokens, clean_tokens


def metric_value(metric: Metric, logits: torch.Tensor) -> torch.Tensor:
    """The metric on `logits`, checked to be one number (a 0-d tensor, kept on the graph): a
    patching score compares single values, so a metric with one value per prompt must be reduced."""
    value = metric(logits)
    if not isinstance(value, torch.Tensor):
        raise InputError(
            f"the patching metric must return a scalar tensor computed from the logits; it returned "
            f"a {type(value).__name__}"
        )
    if value.numel() != 1:
        raise InputError(
            f"the patching metric must return a scalar (one number for the whole batch); it returned "
            f"shape {tuple(value.shape)}, one value per prompt: reduce it, e.g. "
            f"`lambda logits: my_metric(logits).mean()`"
        )
    return value.reshape(())


def position_labels(model: HookedModel, tokens: torch.Tensor) -> list[str]:
    """`"i:token"` for each position of the first row: the axis labels of a position sweep."""
    words = model.to_str_tokens(tokens[0])
    return [f"{i}:{w}" for i, w in enumerate(words)]


def sweep_result(
    model: HookedModel,
    sweep: str,
    layers: Sequence[int],
    values: torch.Tensor,
    clean_tokens: torch.Tensor,
    scores: tuple[float, float],
    direction: str,
) -> PatchResult:
    """A sweep's `values [layer, pos|head]` with its labels and the (clean, corrupted) metric."""
    inner = "head" if sweep == "heads" else "pos"
    labels = (
        [str(h) for h in range(values.shape[1])] if sweep == "heads" else position_labels(model, clean_tokens)
    )
    return PatchResult(
        values=values,
        dims=("layer", inner),
        labels={"layer": [str(layer) for layer in layers], inner: labels},
        clean=scores[0],
        corrupted=scores[1],
        direction=direction,
        sweep=sweep,
    )


def select(activation: torch.Tensor, patch: Patch) -> tuple[slice | int, ...]:
    """The index of a patch's component in an activation `[batch, pos, (head,) d]`."""
    index: list[slice | int] = [slice(None)] * activation.ndim
    if patch.position is not None:
        index[1] = patch.position
    if patch.head is not None:
        index[2] = patch.head
    return tuple(index)


def run_patches(
    model: HookedModel,
    target: torch.Tensor,
    source_cache: dict[str, torch.Tensor],
    patches: Sequence[Patch],
    metric: Metric,
    max_batch: int = 64,
) -> torch.Tensor:
    """Metric for each patch `[len(patches)]`: the target run with that one component taken from the source."""
    rows = target.shape[0]
    per_chunk = max(1, max_batch // rows)
    values: list[torch.Tensor] = []
    for start in range(0, len(patches), per_chunk):
        chunk = list(patches[start : start + per_chunk])
        hooks = chunk_hooks(chunk, source_cache, rows)
        with torch.no_grad():
            logits = model.run_with_hooks(target.repeat(len(chunk), 1), hooks)
        values.extend(metric_value(metric, part) for part in logits.split(rows))
    return torch.stack([v.detach().float() for v in values])


def chunk_hooks(
    chunk: list[Patch], source_cache: dict[str, torch.Tensor], rows: int
) -> list[tuple[str, HookFn]]:
    """Hooks for a batch of `len(chunk)` copies of the target (`rows` each): copy k gets patch k."""
    by_site: dict[str, list[tuple[int, Patch]]] = {}
    for copy, patch in enumerate(chunk):
        by_site.setdefault(patch.site, []).append((copy, patch))

    def make(site: str, items: list[tuple[int, Patch]]) -> HookFn:
        source = source_cache[site]

        def hook(activation: torch.Tensor, point: HookPoint) -> torch.Tensor:
            out = activation.clone()
            for copy, patch in items:
                part = out[copy * rows : (copy + 1) * rows]
                index = select(part, patch)
                part[index] = source[index].to(part.dtype)
            return out

        return hook

    return [(site, make(site, items)) for site, items in by_site.items()]


def activation_patching(
    model: HookedModel,
    clean: Inputs,
    corrupted: Inputs,
    metric: Metric,
    sweep: str = "resid_pre",
    direction: str = "denoising",
    layers: Sequence[int] | None = None,
    max_batch: int = 64,
) -> PatchResult:
    """Sweep `resid_pre|resid_post|attn_out|mlp_out` over layers × positions, or `heads` over
    layers × heads (each head's `hook_z` at every position)."""
    check_sweeps([sweep])
    clean_tokens, source_tokens, target_tokens = source_and_target(model, clean, corrupted, direction)
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    sites = sweep_sites(sweep, layers)
    with torch.no_grad():
        source_logits, source_cache = model.run_with_cache(source_tokens, names=sites)
        target_logits = model(target_tokens)
    assert source_logits is not None
    source_value, target_value = (
        float(metric_value(metric, source_logits)),
        float(metric_value(metric, target_logits)),
    )
    scores = (source_value, target_value) if direction == "denoising" else (target_value, source_value)
    inner = model.cfg.n_heads if sweep == "heads" else clean_tokens.shape[1]
    patches = [
        Patch(site, head=i) if sweep == "heads" else Patch(site, position=i)
        for site in sites
        for i in range(inner)
    ]
    values = run_patches(model, target_tokens, dict(source_cache), patches, metric, max_batch)
    return sweep_result(
        model, sweep, layers, values.view(len(layers), inner), clean_tokens, scores, direction
    )
