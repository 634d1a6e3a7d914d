"""Find SAE latents for a concept: the latents whose activation mass falls mostly on the concept's
words. A first, simple search; feature dashboards come later."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from rama.activations import keep_mask
from rama.errors import InputError
from rama.hooks.core import HookPoint
from rama.hooks.model import HookedModel
from rama.hooks.tokens import Batch
from rama.sae.base import SAE


@dataclass(frozen=True)
class LatentMatch:
    latent: int
    share: float  # fraction of the latent's activation mass on concept tokens
    fires: int  # tokens it fired on
    max_activation: float


def split_keywords(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """(whole words, prefixes) of a keyword list: stripped, lower-cased, a trailing `*` marking a
    prefix, empty entries dropped. Concept search and the steering keyword scorer share this syntax."""
    cleaned = [w.strip().lower() for w in words if w.strip().strip("*")]
    return [w for w in cleaned if not w.endswith("*")], [w[:-1] for w in cleaned if w.endswith("*")]


def concept_token_ids(model: HookedModel, words: Sequence[str]) -> torch.Tensor:
    """Ids of every vocabulary token that, stripped and lower-cased, is one of `words`, or starts with
    one written with a trailing `*` (`ship*`: " ship", "ships"; a prefix only matches tokens of 3 or
    more characters: `s*` matches "sea" but not "st"). The steering keyword scorer reads the same syntax."""
    whole, starred = split_keywords(words)
    if not whole and not starred:
        raise InputError("give at least one concept word, e.g. ['sea', 'ship*']")
    exact, prefixes = set(whole), tuple(starred)
    vocab = model.tokenizer.convert_ids_to_tokens(list(range(model.cfg.d_vocab)))
    hits = []
    for index, piece in enumerate(vocab):
        text = model.tokenizer.convert_tokens_to_string([piece]).strip().lower() if piece else ""
        if text in exact or (len(text) >= 3 and text.startswith(prefixes)):
            hits.append(index)
    return torch.tensor(hits, dtype=torch.long)


def find_latents(
    sae: SAE,
    model: HookedModel,
    batches: Iterable[torch.Tensor],
    words: Sequence[str],
    top: int = 5,
    min_fires: int = 20,
    skip_positions: int = 2,
) -> list[LatentMatch]:
    """Latents ranked by the share of their activation mass that lands on the concept's tokens.
    The first `skip_positions` tokens of each context are left out: they see little or no context and
    carry outsized activations in many models (SmolLM2's layer-12 norm is 25,000 at BOS and 199 at
    position 1 against ≈ 135 after), which would otherwise dominate the peaks."""
    concept = concept_token_ids(model, words)
    on = torch.zeros(sae.cfg.d_sae)
    total = torch.zeros(sae.cfg.d_sae)
    fires = torch.zeros(sae.cfg.d_sae)
    peak = torch.zeros(sae.cfg.d_sae)
    for tokens in batches:
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, [sae.cfg.hook_name])
            codes = sae.encode(cache[sae.cfg.hook_name].float())  # [batch, pos, d_sae]
        keep = keep_mask(tokens, model.tokenizer, True).clone()
        keep[:, :skip_positions] = False
        codes = (codes * keep[..., None]).flatten(0, 1)
        is_concept = torch.isin(tokens.flatten(), concept)
        on += codes[is_concept].sum(0)
        total += codes.sum(0)
        fires += (codes > 0).sum(0)
        peak = torch.maximum(peak, codes.max(0).values)
    share = torch.where(fires >= min_fires, on / total.clamp_min(1e-9), torch.zeros_like(on))
    best = share.topk(top)
    return [
        LatentMatch(int(i), float(s), int(fires[i]), float(peak[i]))
        for s, i in zip(best.values.tolist(), best.indices.tolist(), strict=True)
    ]


def latents_by_contrast(
    sae: SAE, model: HookedModel, positive: Sequence[str], negative: Sequence[str], top: int = 5
) -> list[tuple[int, float]]:
    """Latents most active on `positive` texts relative to `negative` ones: `[(latent, difference of
    mean activation)]`. Finds topic features where `find_latents` finds token detectors. Position 0
    of each text (an attention sink) is left out."""

    def mean_codes(texts: Sequence[str]) -> torch.Tensor:
        if not texts:
            raise InputError("need at least one text on each side of the contrast")
        rows = []
        for text in texts:
            with torch.no_grad():
                _, cache = model.run_with_cache(text, [sae.cfg.hook_name])
                rows.append(sae.encode(cache[sae.cfg.hook_name][0, 1:].float()))
        return torch.cat(rows).mean(0)

    difference = mean_codes(positive) - mean_codes(negative)
    best = difference.topk(top)
    return [(int(i), float(v)) for v, i in zip(best.values.tolist(), best.indices.tolist(), strict=True)]


@dataclass(frozen=True)
class LatentEffect:
    latent: int
    gain: float  # rise in log P(next token is a concept token), nats, averaged over prompts and positions
    entropy: float  # mean next-token entropy with the latent added, nats (high = the text is falling apart)


def latents_by_effect(
    sae: SAE,
    model: HookedModel,
    prompts: Sequence[str],
    words: Sequence[str],
    candidates: Sequence[int] | None = None,
    norm: float = 50.0,
    top: int = 5,
    chunk: int = 32,
    progress: bool = False,
) -> list[LatentEffect]:
    """Latents ranked by what they do rather than what they read: each candidate's decoder row, scaled
    to `norm`, is added at the SAE's site from position 1 on, and the score is how much it raises the
    probability that the next token is one of the concept's (`concept_token_ids(words)`). Latents that
    fire on a concept often only detect it; the ones that make the model produce it are the ones that
    steer. Candidates run `chunk` at a time in one batched forward pass each."""
    ranked = latents_by_effect_per_concept(
        sae, model, prompts, {"concept": words}, candidates, norm, top, chunk, progress
    )
    return ranked["concept"]


def latents_by_effect_per_concept(
    sae: SAE,
    model: HookedModel,
    prompts: Sequence[str],
    concepts: Mapping[str, Sequence[str]],
    candidates: Sequence[int] | None = None,
    norm: float = 50.0,
    top: int = 5,
    chunk: int = 32,
    progress: bool = False,
) -> dict[str, list[LatentEffect]]:
    """`latents_by_effect` for several concepts (name → words) from one set of forward passes: the
    passes are the same for every concept, only the tokens scored differ, so a search over every
    latent costs the same for one concept as for twenty."""
    if not concepts:
        raise InputError("give at least one concept, e.g. {'sea': ['sea', 'ship*']}")
    ids = [concept_token_ids(model, words) for words in concepts.values()]
    chosen = list(range(sae.cfg.d_sae)) if candidates is None else _candidates(sae, candidates)
    batch = model.tokenize(list(prompts))
    base_gain, _ = _concept_log_mass(model, sae.cfg.hook_name, batch, torch.zeros(1, sae.cfg.d_in), ids)
    gains, entropies = [], []
    for start in tqdm(
        range(0, len(chosen), chunk), desc="latent effects", unit="chunk", disable=not progress
    ):
        rows = sae.W_dec[chosen[start : start + chunk]].detach().float()
        vectors = rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12) * norm
        gain, entropy = _concept_log_mass(model, sae.cfg.hook_name, batch, vectors, ids)
        gains.append(gain - base_gain)  # [concepts, chunk]
        entropies.append(entropy)
    gain, entropy = torch.cat(gains, dim=1), torch.cat(entropies)
    ranked = {}
    for name, concept_gain in zip(concepts, gain, strict=True):
        order = concept_gain.argsort(descending=True)[:top].tolist()
        ranked[name] = [LatentEffect(chosen[i], float(concept_gain[i]), float(entropy[i])) for i in order]
    return ranked


def _candidates(sae: SAE, latents: Sequence[int]) -> list[int]:
    if not latents:
        raise InputError("give at least one candidate latent")
    return sae.check_latents(latents)


def _concept_log_mass(
    model: HookedModel, site: str, batch: Batch, vectors: torch.Tensor, concepts: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each vector `[n, d]` added at `site` from position 1 on: the mean over prompts and positions
    ≥ 1 of log Σ_concept p(next token) for each concept's ids (`[concepts, n]`), and the mean next-token
    entropy (`[n]`)."""
    n, prompts = vectors.shape[0], batch.tokens.shape[0]
    mask = batch.attention_mask if batch.attention_mask is not None else torch.ones_like(batch.tokens)
    added = vectors.repeat_interleave(prompts, 0)  # [n * prompts, d]

    def add(activation: torch.Tensor, point: HookPoint) -> torch.Tensor:
        out = activation.clone()
        out[:, 1:] += added[:, None, :].to(activation.dtype)
        return out

    with torch.no_grad():
        logits = model.run_with_hooks(
            batch.tokens.repeat(n, 1), fwd_hooks=[(site, add)], attention_mask=mask.repeat(n, 1)
        )
    log_probs = logits[:, 1:].float().log_softmax(-1)  # predictions made at positions ≥ 1
    keep = mask.repeat(n, 1)[:, 1:].float()

    def mean_per_vector(value: torch.Tensor) -> torch.Tensor:  # [n * prompts, pos] -> [n]
        return ((value * keep).sum(1) / keep.sum(1).clamp_min(1)).view(n, prompts).mean(1)

    masses = torch.stack([mean_per_vector(log_probs[..., ids].logsumexp(-1)) for ids in concepts])
    entropy = mean_per_vector(-(log_probs.exp() * log_probs).sum(-1))
    return masses, entropy
