"""What a latent does to the next-token prediction: the tokens its decoder direction promotes and
suppresses most through the unembedding, computed in chunks of latents (never `[d_sae, d_vocab]`).

Two readings, as the dashboards give them: `direct` is `W_dec @ W_U`; `norm` is
`(W_dec * g) @ W_U` with `g` the final norm's per-dimension gain (LayerNorm/RMSNorm `weight`,
Gemma's `1 + weight`), the direction as it reaches the unembedding once the final norm scales it
(the norm's division by the residual's size is left out: it scales every token alike).
For a transcoder the decoder writes to its output site, so the same product applies to `W_dec`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rama.errors import InputError
from rama.hooks.model import HookedModel
from rama.models.spec import ModuleOutput

FINAL_NORM = "ln_final.hook_normalized"


def final_norm_gain(model: HookedModel) -> torch.Tensor:
    """`[d_model]` the final norm's per-dimension gain."""
    spec = model.adapter.final_sites().get(FINAL_NORM)
    if not isinstance(spec, ModuleOutput):
        raise InputError(f"{model.cfg.model_type} model has no final norm site {FINAL_NORM!r}")
    module = model.hf.get_submodule(spec.path)
    weight = getattr(module, "weight", None)
    if weight is None:
        return torch.ones(model.cfg.d_model, device=model.device)
    gain = weight.detach().float()
    return 1.0 + gain if "Gemma" in type(module).__name__ else gain


@dataclass(frozen=True)
class LogitEffects:
    """Per latent, the `n` most promoted and most suppressed tokens: `[d_sae, n]` each."""

    promoted_ids: torch.Tensor
    promoted: torch.Tensor
    suppressed_ids: torch.Tensor
    suppressed: torch.Tensor  # most negative first


def logit_effects(
    W_dec: torch.Tensor, W_U: torch.Tensor, gain: torch.Tensor | None = None, n: int = 10, chunk: int = 512
) -> LogitEffects:
    """From `W_dec [d_sae, d_model]` and `W_U [d_model, d_vocab]` (and a final-norm `gain [d_model]`),
    the top and bottom `n` of each latent's logit effect row, `chunk` latents at a time."""
    if W_dec.shape[1] != W_U.shape[0]:
        raise InputError(f"decoder width {W_dec.shape[1]} does not match the unembedding's {W_U.shape[0]}")
    n = min(n, W_U.shape[1])
    W_U = W_U.detach().float()
    parts: list[tuple[torch.Tensor, ...]] = []
    for start in range(0, len(W_dec), chunk):
        rows = W_dec[start : start + chunk].detach().float().to(W_U.device)
        if gain is not None:
            rows = rows * gain.to(rows.device)
        effect = rows @ W_U  # [chunk, d_vocab]
        top = effect.topk(n, dim=1)
        bottom = effect.topk(n, dim=1, largest=False)
        parts.append((top.indices, top.values, bottom.indices, bottom.values))
    return LogitEffects(*(torch.cat([part[i] for part in parts]).cpu() for i in range(4)))


def model_logit_effects(
    model: HookedModel, W_dec: torch.Tensor, n: int = 10, chunk: int = 512
) -> dict[str, LogitEffects]:
    """`{"direct": ..., "norm": ...}` for a decoder writing into `model`'s residual stream."""
    W_U = model.W_U
    return {
        "direct": logit_effects(W_dec, W_U, None, n, chunk),
        "norm": logit_effects(W_dec, W_U, final_norm_gain(model), n, chunk),
    }
