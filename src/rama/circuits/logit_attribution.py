"""Direct logit attribution: how much each part of the residual stream writes into one logit (or a
logit difference) directly, through the final norm and the unembedding.

The final residual is a sum, `resid = embed (+ pos_embed) + Σ_l (attn_out_l + mlp_out_l)`, and with
TransformerLens's convention the final norm is made linear by freezing its scale at the value it
had on the clean run: `norm(x) ≈ w ⊙ centre(x) / scale + b`, where `centre` subtracts the mean
(LayerNorm; the identity for RMSNorm) and `scale = sqrt(mean(centre(x)²) + eps)` of the *whole*
final residual. Each part `c` then contributes `(w ⊙ centre(c) / scale) · d`, with `d` the unembedding
column of the answer (minus the wrong answer's). What the parts sum to, exactly (up to float
rounding), is

    Σ parts = logit(answer) − logit(wrong) − (b · d + b_U[answer] − b_U[wrong])

the model's own logit difference (before Gemma 2's soft-capping, which is not linear) minus the
final norm's bias and the LM head's bias terms, reported as `bias`. An attention layer's part is
split further into its heads (`hook_result`, each head's `z @ W_O`) and `attn_bias` (the output
projection's bias, what no head writes), so the heads plus `attn_bias` sum to the layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rama.circuits.lenses import final_norm, frozen_call, lm_head, logit_softcap
from rama.errors import ConfigError, InputError, RamaError
from rama.hooks.model import HookedModel
from rama.interventions.logit_metrics import logit_difference
from rama.models.sites import block_site

NORM_TOLERANCE = 1e-3  # relative: the frozen-scale norm must reproduce the model's own final norm


class NormNotLinearisedError(RamaError, RuntimeError):
    """The final norm did not match the RMSNorm / LayerNorm form the attribution assumes."""


@dataclass(frozen=True)
class LogitAttribution:
    """Per prompt, each part's direct contribution to the logit (difference) at its position."""

    labels: list[str]  # "embed", ["pos_embed",] "0_attn_out", "0_mlp_out", … (TransformerLens's names)
    parts: torch.Tensor  # [batch, part]
    heads: torch.Tensor | None  # [batch, layer, head]; None where heads are not direct writers (Gemma 2/3)
    attn_bias: torch.Tensor | None  # [batch, layer]: the attention output no single head writes
    bias: torch.Tensor  # [batch]: final norm bias and LM head bias terms
    total: torch.Tensor  # [batch]: the model's logit (difference), before any soft-capping
    scale: torch.Tensor  # [batch]: the final norm's frozen scale

    def layer_parts(self, kind: str) -> torch.Tensor:
        """`[batch, layer]` of the `attn_out` or `mlp_out` parts."""
        columns = [i for i, label in enumerate(self.labels) if label.endswith(f"_{kind}")]
        return self.parts[:, columns]

    def to_dict(self, row: int = 0) -> dict[str, Any]:
        out: dict[str, Any] = {
            "total": float(self.total[row]),
            "bias": float(self.bias[row]),
            "sum_of_parts": float(self.parts[row].sum()),
            "scale": float(self.scale[row]),
            "parts": dict(zip(self.labels, self.parts[row].tolist(), strict=True)),
        }
        if self.heads is not None and self.attn_bias is not None:
            out["heads"] = self.heads[row].tolist()
            out["attn_bias"] = self.attn_bias[row].tolist()
        return out


def single_token(model: HookedModel, text: str) -> int:
    """The id of `text` when it is exactly one token for the model's tokenizer (e.g. " Paris")."""
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = [model.tokenizer.decode([i]) for i in ids]
        raise InputError(
            f"{text!r} is {len(ids)} tokens for this tokenizer ({pieces}); give one token, e.g. the first "
            f"piece {pieces[0]!r} if any, and mind the leading space (' Paris', not 'Paris')"
        )
    return int(ids[0])


def norm_form(model: HookedModel, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, float, bool]:
    """(w `[d_model]`, b `[d_model]`, eps, centred) of the final norm: `w ⊙ centre(x)/scale + b`.
    RMSNorm's effective gain is read by running the norm itself on a constant vector (so Gemma's
    `1 + weight` needs no special case); LayerNorm's weight and bias are its parameters."""
    norm = final_norm(model)
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", None)
    if eps is None:
        raise NormNotLinearisedError(f"the final norm {type(norm).__name__} has no eps attribute")
    d_model = model.cfg.d_model
    centred = model.cfg.normalization == "LN" or isinstance(norm, nn.LayerNorm)
    if centred:
        weight = getattr(norm, "weight", None)
        bias = getattr(norm, "bias", None)
        w = weight.detach() if weight is not None else torch.ones(d_model)
        b = bias.detach() if bias is not None else torch.zeros(d_model)
    else:
        probe = torch.full((1, d_model), 1e3, device=model.device)  # rms = 1e3: eps is negligible
        with torch.no_grad():
            w = frozen_call(norm, probe)[0]  # = w ⊙ x / rms(x) with x / rms(x) = 1
        b = torch.zeros(d_model)
    return w.to(model.device, dtype), b.to(model.device, dtype), float(eps), centred


def at_positions(value: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """`[batch, ...]` from `[batch, pos, ...]` at one position per row."""
    return value[torch.arange(value.shape[0], device=value.device), positions.to(value.device)]


def answer_direction(model: HookedModel, answer: torch.Tensor, wrong: torch.Tensor | None) -> torch.Tensor:
    """`[batch, d_model]`: the unembedding column of each answer, minus the wrong answer's."""
    W_U = model.W_U.detach()  # [d_model, d_vocab]
    direction = W_U[:, answer.to(W_U.device)].T
    return direction if wrong is None else direction - W_U[:, wrong.to(W_U.device)].T


def head_bias(model: HookedModel, answer: torch.Tensor, wrong: torch.Tensor | None) -> torch.Tensor:
    """`[batch]`: the LM head's bias term (0 for the usual bias-free heads)."""
    bias = getattr(lm_head(model), "bias", None)
    if bias is None:
        return torch.zeros(answer.shape[0], device=model.device)
    b = bias.detach()
    return b[answer.to(b.device)] - (0 if wrong is None else b[wrong.to(b.device)])


def as_ids(tokens: torch.Tensor | int | list[int], batch: int) -> torch.Tensor:
    ids = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
    if ids.numel() == 1:
        ids = ids.expand(batch)
    if ids.numel() != batch:
        raise InputError(f"give one answer token per prompt ({batch}), or one for all; got {ids.numel()}")
    return ids


def attribution_sites(model: HookedModel, per_head: bool) -> list[str]:
    n = model.cfg.n_layers
    sites = [
        block_site(0, "hook_resid_pre"),
        block_site(n - 1, "hook_resid_post"),
        "ln_final.hook_normalized",
    ]
    if "hook_pos_embed" in model.sites:
        sites.append("hook_pos_embed")
    for layer in range(n):
        sites += [block_site(layer, "hook_attn_out"), block_site(layer, "hook_mlp_out")]
        if per_head:
            sites.append(block_site(layer, "attn.hook_result"))
    return sites


def residual_parts(model: HookedModel, cache: Any, positions: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """(labels, `[batch, part, d_model]`): the pieces the final residual is the sum of, at `positions`."""
    embed = at_positions(cache[block_site(0, "hook_resid_pre")], positions)
    labels, parts = ["embed"], [embed]
    if "hook_pos_embed" in model.sites:
        position = at_positions(cache["hook_pos_embed"], positions)
        parts = [embed - position, position]
        labels.append("pos_embed")
    for layer in range(model.cfg.n_layers):
        for kind in ("attn_out", "mlp_out"):
            labels.append(f"{layer}_{kind}")
            parts.append(at_positions(cache[block_site(layer, f"hook_{kind}")], positions))
    return labels, torch.stack(parts, dim=1)


def check_norm(normalised: torch.Tensor, expected: torch.Tensor) -> None:
    """Refuse to attribute through a final norm the frozen-scale form does not reproduce."""
    error = float((normalised - expected).abs().max())
    size = float(expected.abs().max().clamp_min(1e-6))
    if error > NORM_TOLERANCE * size:
        raise NormNotLinearisedError(
            f"the frozen-scale final norm differs from the model's by {error:.3g} (of {size:.3g}); this "
            "architecture's final norm is not a plain RMSNorm or LayerNorm, so direct logit attribution "
            "through it would not sum to the logit"
        )


def direct_logit_attribution(
    model: HookedModel,
    prompts: str | list[str] | torch.Tensor,
    answer: torch.Tensor | int | list[int],
    wrong: torch.Tensor | int | list[int] | None = None,
    *,
    per_head: bool | None = None,
    prepend_bos: bool | None = None,
) -> LogitAttribution:
    """Attribute logit(answer) (− logit(wrong)) at each prompt's last token to the embedding, every
    attention layer and MLP and (`per_head`, default: where heads write the residual directly) every head."""
    sandwich = bool(getattr(model.adapter, "has_sandwich_norms", False))
    if per_head and sandwich:
        raise ConfigError("per-head attribution needs heads that write the residual stream directly; "
                          "Gemma 2/3 normalise the attention output first: use per_head=False")  # fmt: skip
    per_head = not sandwich if per_head is None else per_head
    lm_head(model)  # refuses an encoder early
    batch = model.tokenize(prompts, prepend_bos=prepend_bos)
    mask = batch.attention_mask if batch.attention_mask is not None else torch.ones_like(batch.tokens)
    positions = mask.long().sum(-1) - 1  # right padding: each row's last real token
    answer_ids = as_ids(answer, batch.tokens.shape[0])
    wrong_ids = None if wrong is None else as_ids(wrong, batch.tokens.shape[0])
    with torch.no_grad():
        logits, cache = model.run_with_cache(batch.tokens, attribution_sites(model, per_head),
                                             attention_mask=batch.attention_mask)  # fmt: skip
    assert logits is not None
    resid = at_positions(cache[block_site(model.cfg.n_layers - 1, "hook_resid_post")], positions).float()
    w, b, eps, centred = norm_form(model, torch.float32)

    def centre(x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(-1, keepdim=True) if centred else x

    scale = (centre(resid).pow(2).mean(-1) + eps).sqrt()  # [batch]: frozen from this (clean) run
    check_norm(
        w * centre(resid) / scale[:, None] + b, at_positions(cache["ln_final.hook_normalized"], positions)
    )
    unembed = answer_direction(model, answer_ids, wrong_ids).float()  # [batch, d_model]
    direction = unembed * w  # the norm's gain folded in

    def project(x: torch.Tensor) -> torch.Tensor:  # [batch, *, d_model] -> [batch, *]
        flat = centre(x.float()) / scale.view(-1, *([1] * (x.ndim - 1)))
        return torch.einsum("b...d,bd->b...", flat, direction)

    labels, parts = residual_parts(model, cache, positions)
    contributions = project(parts)  # [batch, part]
    bias = unembed @ b + head_bias(model, answer_ids, wrong_ids).float()  # [batch]
    heads, attn_bias = None, None
    if per_head:
        results = [
            at_positions(cache[block_site(i, "attn.hook_result")], positions)
            for i in range(model.cfg.n_layers)
        ]
        heads = project(torch.stack(results, dim=1))  # [batch, layer, head]
        attn_bias = contributions[
            :, [labels.index(f"{i}_attn_out") for i in range(model.cfg.n_layers)]
        ] - heads.sum(-1)
    total = pre_cap_difference(model, logits, positions, answer_ids, wrong_ids)
    return LogitAttribution(labels, contributions, heads, attn_bias, bias, total, scale)


def pre_cap_difference(model: HookedModel, logits: torch.Tensor, positions: torch.Tensor,
                       answer: torch.Tensor, wrong: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    """`[batch]`: the model's logit (difference) at each row's position, soft-capping undone."""
    at = at_positions(logits, positions).float()  # [batch, d_vocab]
    cap = logit_softcap(model)
    if cap is not None:
        at = torch.atanh((at / cap).clamp(-1 + 1e-7, 1 - 1e-7)) * cap
    rows = torch.arange(at.shape[0])
    if wrong is None:
        return at[rows, answer.to(at.device)]
    return logit_difference(at[:, None], answer.to(at.device), wrong.to(at.device))
