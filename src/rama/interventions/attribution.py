"""Attribution patching (Nanda 2023; Syed et al. 2023): the first-order Taylor estimate of activation
patching, `(source − target) · ∂metric/∂activation` at the target run, for every component at once
from one forward and one backward pass on the target plus one forward pass on the source."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rama.errors import InputError
from rama.hooks.model import HookedModel
from rama.interventions.patching import (
    Inputs,
    Metric,
    PatchResult,
    check_sweeps,
    metric_value,
    source_and_target,
    sweep_result,
    sweep_sites,
)


def attribution_patching(
    model: HookedModel,
    clean: Inputs,
    corrupted: Inputs,
    metric: Metric,
    sweeps: Sequence[str] = ("resid_pre", "attn_out", "mlp_out", "heads"),
    direction: str = "denoising",
) -> dict[str, PatchResult]:
    """Estimated metric after each patch, for every sweep, shaped like `activation_patching`'s."""
    sweeps = check_sweeps(sweeps)
    clean_tokens, source_tokens, target_tokens = source_and_target(model, clean, corrupted, direction)
    layers = range(model.cfg.n_layers)
    sites = {sweep: sweep_sites(sweep, layers) for sweep in sweeps}
    every = [site for names in sites.values() for site in names]
    with torch.no_grad():
        source_logits, source_cache = model.run_with_cache(source_tokens, names=every)
    target_logits, target_cache = model.run_with_cache(target_tokens, names=every, keep_grad=True)
    assert source_logits is not None and target_logits is not None
    source_value = float(metric_value(metric, source_logits))
    target_metric = metric_value(metric, target_logits)
    grads = torch.autograd.grad(target_metric, [target_cache[s] for s in every], allow_unused=True)
    target_value = float(target_metric.detach())
    gradient = dict(zip(every, grads, strict=True))
    scores = (source_value, target_value) if direction == "denoising" else (target_value, source_value)
    results: dict[str, PatchResult] = {}
    for sweep, names in sites.items():
        estimates = []
        for site in names:
            delta = (source_cache[site] - target_cache[site].detach()).float()
            grad = gradient[site]
            effect = torch.zeros_like(delta) if grad is None else delta * grad.float()
            # heads: sum over batch, positions, d_head -> [head]; else over batch and d -> [pos]
            estimates.append(effect.sum(dim=(0, 1, 3)) if sweep == "heads" else effect.sum(dim=(0, 2)))
        values = target_value + torch.stack(estimates).detach()  # the metric already averages rows
        results[sweep] = sweep_result(model, sweep, layers, values, clean_tokens, scores, direction)
    return results


def agreement(estimate: PatchResult, actual: PatchResult) -> float:
    """Pearson correlation between attribution estimates and real activation patching results."""
    if estimate.values.shape != actual.values.shape:
        raise InputError(
            f"results differ in shape: {tuple(estimate.values.shape)} and {tuple(actual.values.shape)}"
        )
    a = estimate.values.flatten().double()
    b = actual.values.flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])
