"""Attribution patching (Nanda 2023; Syed et al. 2023): the first-order Taylor estimate of activation
patching, `(source − target) · ∂metric/∂activation` at the target run, for every component at once
from one forward and one backward pass on the target plus one forward pass on the source."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rama.hooks.model import HookedModel
from rama.interventions.patching import SWEEPS, Metric, PatchResult, _check_pair, _position_labels


def attribution_patching(
    model: HookedModel,
    clean: torch.Tensor | str | list[str],
    corrupted: torch.Tensor | str | list[str],
    metric: Metric,
    sweeps: Sequence[str] = ("resid_pre", "attn_out", "mlp_out", "heads"),
    direction: str = "denoising",
) -> dict[str, PatchResult]:
    """Estimated metric after each patch, for every sweep, shaped like `activation_patching`'s."""
    unknown = [s for s in sweeps if s not in SWEEPS]
    if unknown:
        raise ValueError(f"unknown sweeps {unknown}; choose from {', '.join(SWEEPS)}")
    if direction not in ("denoising", "noising"):
        raise ValueError(f"direction must be 'denoising' or 'noising'; got {direction!r}")
    clean_tokens, corrupted_tokens = model.to_tokens(clean), model.to_tokens(corrupted)
    _check_pair(clean_tokens, corrupted_tokens)
    layers = range(model.cfg.n_layers)
    sites = {sweep: [SWEEPS[sweep].format(layer=layer) for layer in layers] for sweep in sweeps}
    every = [site for names in sites.values() for site in names]
    source_tokens, target_tokens = (
        (clean_tokens, corrupted_tokens) if direction == "denoising" else (corrupted_tokens, clean_tokens)
    )
    with torch.no_grad():
        source_logits, source_cache = model.run_with_cache(source_tokens, names=every)
    target_logits, target_cache = model.run_with_cache(target_tokens, names=every, keep_grad=True)
    assert source_logits is not None and target_logits is not None
    target_metric = metric(target_logits)
    grads = torch.autograd.grad(target_metric, [target_cache[s] for s in every], allow_unused=True)
    target_value = float(target_metric.detach())
    gradient = {site: g for site, g in zip(every, grads, strict=True)}
    clean_value, corrupted_value = (
        (float(metric(source_logits)), float(target_value))
        if direction == "denoising"
        else (float(target_value), float(metric(source_logits)))
    )
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
        inner = "head" if sweep == "heads" else "pos"
        labels = (
            [str(h) for h in range(model.cfg.n_heads)]
            if sweep == "heads"
            else _position_labels(model, clean_tokens)
        )
        results[sweep] = PatchResult(
            values=values,
            dims=("layer", inner),
            labels={"layer": [str(layer) for layer in layers], inner: labels},
            clean=clean_value,
            corrupted=corrupted_value,
            direction=direction,
            sweep=sweep,
        )
    return results


def agreement(estimate: PatchResult, actual: PatchResult) -> float:
    """Pearson correlation between attribution estimates and real activation patching results."""
    if estimate.values.shape != actual.values.shape:
        raise ValueError(
            f"results differ in shape: {tuple(estimate.values.shape)} and {tuple(actual.values.shape)}"
        )
    a = estimate.values.flatten().double()
    b = actual.values.flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])
