"""How good an SAE is: reconstruction, sparsity, and the model's loss with the SAE spliced in.

`ce_loss_recovered = (CE_ablated − CE_spliced) / (CE_ablated − CE_clean)`: 1 when splicing the SAE
costs nothing, 0 when it is as bad as zero-ablating the site. Where zero-ablating the site does not
raise the loss (by less than `MIN_ABLATION_GAP` nats), the ratio measures nothing: it is reported
as NaN (undefined; JSON `NaN`) with a warning, never as a huge number of either sign.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from rama.activations import HarvestConfig, batches_with_activations, keep_mask
from rama.errors import InputError
from rama.hooks.core import HookPoint
from rama.hooks.model import HookedModel
from rama.metrics import unexplained_fraction
from rama.sae.base import SAE


def reconstruction_metrics(sae: SAE, x: torch.Tensor, target: torch.Tensor | None = None) -> dict[str, Any]:
    """MSE, FVU, explained variance, L0, dead/dense fractions, log-density histogram, shrinkage."""
    target = x if target is None else target
    with torch.no_grad():
        codes = sae.encode(x)
        reconstruction = sae.decode(codes, x)
    error = (reconstruction - target).pow(2).sum(-1)
    unexplained = float(unexplained_fraction(error, target))
    density = (codes > 0).float().mean(0)
    log_density = torch.log10(density.clamp_min(1e-10))
    counts, edges = torch.histogram(log_density, bins=20, range=(-10.0, 0.0))
    return {
        "mse": float(error.mean()),
        "fvu": unexplained,
        "explained_variance": 1 - unexplained,
        "l0": float((codes > 0).sum(-1).float().mean()),
        "dead_fraction": float((density == 0).float().mean()),
        "dense_fraction": float((density > 0.1).float().mean()),
        "shrinkage": float((reconstruction.norm(dim=-1) / target.norm(dim=-1).clamp_min(1e-12)).mean()),
        "log10_density_histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
        "log10_density": log_density,
    }


def next_token_losses(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """`[batch, pos - 1]` cross-entropy of each next token."""
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none"
    ).view(tokens.shape[0], -1)


def spliced_losses(sae: SAE, model: HookedModel, tokens: torch.Tensor, keep: torch.Tensor) -> dict[str, Any]:
    """Clean, SAE-spliced and zero-ablated losses, and KL(clean ‖ spliced), for one batch."""
    site_in = sae.cfg.hook_name
    site_out = sae.cfg.hook_name_out or site_in
    captured: dict[str, torch.Tensor] = {}

    def capture(activation: torch.Tensor, hook: HookPoint) -> None:
        captured["x"] = activation

    def splice(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        x = captured.get("x", activation)
        replaced = sae(x.float()).to(activation.dtype)
        return torch.where(keep[..., None], replaced, activation)

    def ablate(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        return torch.where(keep[..., None], torch.zeros_like(activation), activation)

    with torch.no_grad():
        clean = model(tokens)
        spliced = model.run_with_hooks(tokens, [(site_in, capture), (site_out, splice)])
        ablated = model.run_with_hooks(tokens, [(site_out, ablate)])
    kl = F.kl_div(
        spliced.float().log_softmax(-1), clean.float().log_softmax(-1), log_target=True, reduction="none"
    )
    return {
        "clean": next_token_losses(clean, tokens).mean(),
        "spliced": next_token_losses(spliced, tokens).mean(),
        "ablated": next_token_losses(ablated, tokens).mean(),
        "kl": kl.sum(-1)[keep].mean(),
    }


MIN_ABLATION_GAP = 1e-3  # nats: below this, ablating the site does not measurably raise the loss


def ce_loss_recovered(clean: float, spliced: float, ablated: float) -> float:
    """`(ablated − spliced) / (ablated − clean)`, or NaN with a warning when ablating the site raises
    the loss by less than `MIN_ABLATION_GAP` (the ratio would divide by ~0 and mean nothing)."""
    gap = ablated - clean
    if not gap >= MIN_ABLATION_GAP:
        warnings.warn(
            f"ce_loss_recovered is undefined (reported as NaN): zero-ablating the site changes the loss by "
            f"{gap:+.2e} nats (clean {clean:.4f}, ablated {ablated:.4f}), so no loss is there to recover",
            stacklevel=2,
        )
        return math.nan
    return (ablated - spliced) / gap


def evaluate(
    sae: SAE,
    model: HookedModel,
    *,
    corpus: str | Path | None = None,
    config: HarvestConfig | None = None,
) -> dict[str, Any]:
    """Every metric of `metrics.json` on held-out text (the corpus's test split by default)."""
    config = config or HarvestConfig(tokens=16_384, split="test", progress=False)
    site_in = sae.cfg.hook_name
    sites = [site_in] if not sae.cfg.hook_name_out else [site_in, sae.cfg.hook_name_out]
    xs, ys, totals = [], [], {"clean": 0.0, "spliced": 0.0, "ablated": 0.0, "kl": 0.0}
    n_batches = 0
    for tokens, acts in batches_with_activations(model, sites, config, corpus):
        if acts[site_in].shape[-1] != sae.cfg.d_in:
            raise InputError(
                f"the SAE reads d_in={sae.cfg.d_in} but {site_in} has width {acts[site_in].shape[-1]}"
            )
        keep = keep_mask(tokens, model.tokenizer, config.exclude_special_tokens)
        xs.append(acts[site_in][keep].float())
        ys.append(acts[sites[-1]][keep].float())
        for name, value in spliced_losses(sae, model, tokens, keep).items():
            totals[name] += float(value)
        n_batches += 1
    if not n_batches:
        raise InputError("the corpus gave no evaluation batch")
    metrics = reconstruction_metrics(sae, torch.cat(xs), torch.cat(ys))
    losses = {name: value / n_batches for name, value in totals.items()}
    recovered = ce_loss_recovered(losses["clean"], losses["spliced"], losses["ablated"])
    metrics |= {
        "ce_loss_clean": losses["clean"],
        "ce_loss_spliced": losses["spliced"],
        "ce_loss_ablated": losses["ablated"],
        "ce_loss_recovered": recovered,
        "kl_spliced": losses["kl"],
        "eval_tokens": n_batches * config.batch_size * config.context_size,
    }
    return metrics
