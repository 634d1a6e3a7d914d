"""Path patching (Wang et al. 2022; Goldowsky-Dill et al. 2023): the effect of sender heads on
receivers through the direct path only.

Run 1 (the base input) with every attention head (`hook_z`) and every MLP (`hook_mlp_out`) frozen
at its base value, except the senders, which take their values from the other input; record what
the receivers read. Run 2 (the base input again) with only the receivers' inputs replaced by what run
1 recorded. Freezing the MLPs too keeps the path direct: the senders reach the receivers through the
residual stream alone. Receivers are heads' query, key or value inputs, or the logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rama.errors import ConfigError
from rama.hooks import HookFn
from rama.hooks.core import HookPoint
from rama.hooks.model import HookedModel
from rama.interventions.patching import Inputs, Metric, PatchResult, metric_value, source_and_target
from rama.models.sites import block_site

Head = tuple[int, int]


@dataclass(frozen=True)
class Receiver:
    """A head's `q`, `k` or `v` input; `Receiver.logits()` for the direct path to the output."""

    layer: int
    head: int
    input: str = "q"

    @staticmethod
    def logits() -> Receiver:
        return Receiver(-1, -1, "logits")

    def site(self) -> str:
        return block_site(self.layer, f"attn.hook_{self.input}")


def _check(model: HookedModel, senders: Sequence[Head], receivers: Sequence[Receiver]) -> None:
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    bad = [s for s in senders if not (0 <= s[0] < n_layers and 0 <= s[1] < n_heads)]
    if bad or not senders:
        raise ConfigError(
            f"senders must be (layer, head) pairs of this {n_layers}×{n_heads} model; got {list(senders)}"
        )
    for receiver in receivers:
        if receiver.input == "logits":
            continue
        if receiver.input not in ("q", "k", "v") or not 0 <= receiver.head < n_heads:
            raise ConfigError(
                f"a receiver is a head's 'q', 'k' or 'v' input (or Receiver.logits()); got {receiver}"
            )
        if not all(s[0] < receiver.layer for s in senders):
            raise ConfigError(
                f"every sender must sit in a layer before its receiver {receiver}; senders {list(senders)}"
            )


def _freeze(
    model: HookedModel, base: dict[str, torch.Tensor], other: dict[str, torch.Tensor], senders: Sequence[Head]
) -> list[tuple[str, HookFn]]:
    """Hooks holding every head and MLP at its base value, the senders at the other input's."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in senders:
        by_layer.setdefault(layer, []).append(head)

    def heads(site: str, chosen: list[int]) -> HookFn:
        def hook(z: torch.Tensor, point: HookPoint) -> torch.Tensor:
            out = base[site].clone()
            out[:, :, chosen] = other[site][:, :, chosen]
            return out.to(z.dtype)

        return hook

    def mlp(site: str) -> HookFn:
        return lambda out, point: base[site].to(out.dtype)

    layers = range(model.cfg.n_layers)
    hooks = [
        (block_site(i, "attn.hook_z"), heads(block_site(i, "attn.hook_z"), by_layer.get(i, [])))
        for i in layers
    ]
    return hooks + [(block_site(i, "hook_mlp_out"), mlp(block_site(i, "hook_mlp_out"))) for i in layers]


def kv_index(model: HookedModel, receiver: Receiver) -> int:
    """The head index at the receiver's site (keys and values may have fewer heads: GQA)."""
    if receiver.input == "q":
        return receiver.head
    return receiver.head * model.cfg.n_kv_heads // model.cfg.n_heads


def base_and_other(
    model: HookedModel, clean: Inputs, corrupted: Inputs, direction: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(base tokens, other tokens): noising runs clean with senders from corrupted; denoising, the reverse."""
    _, source, target = source_and_target(model, clean, corrupted, direction)
    return target, source


def _component_caches(model: HookedModel, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every head output (`hook_z`) and MLP output of one run."""
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names=lambda s: s.endswith(("attn.hook_z", "hook_mlp_out")))
    return dict(cache)


def path_patch(
    model: HookedModel,
    clean: Inputs,
    corrupted: Inputs,
    metric: Metric,
    senders: Sequence[Head],
    receivers: Sequence[Receiver],
    direction: str = "noising",
) -> float:
    """The metric after patching the senders → receivers paths. Noising (the IOI paper's way) runs
    the clean input with the senders from the corrupted one; denoising, the reverse."""
    _check(model, senders, receivers)
    base_tokens, other_tokens = base_and_other(model, clean, corrupted, direction)
    base, other = _component_caches(model, base_tokens), _component_caches(model, other_tokens)
    return _patch_paths(model, base_tokens, base, other, metric, senders, receivers)


def _patch_paths(
    model: HookedModel,
    base_tokens: torch.Tensor,
    base: dict[str, torch.Tensor],
    other: dict[str, torch.Tensor],
    metric: Metric,
    senders: Sequence[Head],
    receivers: Sequence[Receiver],
) -> float:
    """Runs 1 and 2 of the module docstring, from the two runs' component caches."""
    frozen = _freeze(model, base, other, senders)
    with torch.no_grad():
        if any(r.input == "logits" for r in receivers):
            if len(receivers) > 1:
                raise ConfigError("the logits receiver stands alone; patch head receivers in a separate call")
            return float(metric_value(metric, model.run_with_hooks(base_tokens, frozen)))
        reads = sorted({r.site() for r in receivers})
        _, recorded = model.run_with_cache(base_tokens, names=reads, fwd_hooks=frozen)
        hooks = [
            (site, _receive(model, recorded[site], [r for r in receivers if r.site() == site]))
            for site in reads
        ]
        return float(metric_value(metric, model.run_with_hooks(base_tokens, hooks)))


def _receive(model: HookedModel, recorded: torch.Tensor, receivers: list[Receiver]) -> HookFn:
    indices = [kv_index(model, r) for r in receivers]

    def hook(activation: torch.Tensor, point: HookPoint) -> torch.Tensor:
        out = activation.clone()
        out[:, :, indices] = recorded[:, :, indices].to(out.dtype)
        return out

    return hook


def path_patching_senders(
    model: HookedModel,
    clean: Inputs,
    corrupted: Inputs,
    metric: Metric,
    receivers: Sequence[Receiver],
    direction: str = "noising",
    senders: Sequence[Head] | None = None,
) -> PatchResult:
    """Every head before the receivers (or each of `senders`) as a lone sender: `values [layer, head]`
    (NaN where a head cannot send, at or after a receiver's layer, or is not among `senders`)."""
    clean_tokens, other_tokens, base_tokens = source_and_target(model, clean, corrupted, direction)
    corrupted_tokens = other_tokens if direction == "noising" else base_tokens
    with torch.no_grad():  # first, so a metric that cannot be used fails before the sweep
        clean_value = float(metric_value(metric, model(clean_tokens)))
        corrupted_value = float(metric_value(metric, model(corrupted_tokens)))
    base, other = (
        _component_caches(model, base_tokens),
        _component_caches(model, other_tokens),
    )  # once for all
    last = min((r.layer for r in receivers if r.input != "logits"), default=model.cfg.n_layers)
    values = torch.full((model.cfg.n_layers, model.cfg.n_heads), float("nan"))
    every = [(layer, head) for layer in range(last) for head in range(model.cfg.n_heads)]
    for layer, head in every if senders is None else senders:
        _check(model, [(layer, head)], receivers)
        values[layer, head] = _patch_paths(
            model, base_tokens, base, other, metric, [(layer, head)], receivers
        )
    return PatchResult(
        values=values,
        dims=("layer", "head"),
        labels={
            "layer": [str(i) for i in range(model.cfg.n_layers)],
            "head": [str(h) for h in range(model.cfg.n_heads)],
        },
        clean=clean_value,
        corrupted=corrupted_value,
        direction=direction,
        sweep="path:"
        + ",".join(f"{r.layer}.{r.head}.{r.input}" if r.input != "logits" else "logits" for r in receivers),
    )
