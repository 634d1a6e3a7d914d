"""Steering that is measured: for each strength, how often the continuations are about the concept
(a documented, reproducible scorer) and how fluent they stay (perplexity under the unsteered model)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from tqdm import tqdm

from rama.activations.sentence_embeddings import SentenceEmbedder, sentence_embedder
from rama.atomic import write_text
from rama.errors import ConfigError, InputError
from rama.features.search import split_keywords
from rama.hooks.model import HookedModel
from rama.interventions.steering import Hook, check_finite_output
from rama.plotting import pyplot, save_figure

Scorer = Callable[[list[str]], list[bool]]
Key = TypeVar("Key", bound=Hashable)


def keyword_pattern(words: Sequence[str]) -> re.Pattern[str]:
    """Whole words, case-insensitive; a trailing `*` makes a keyword a prefix (`ship*` also matches
    "ships" and "shipwreck", while `sea` does not match "season" or `war` "warm"). Inner spaces are kept,
    so `outer space` matches the phrase."""
    whole, prefixes = split_keywords(words)
    if not whole and not prefixes:
        raise ConfigError("the keyword scorer needs at least one keyword, e.g. ['sea', 'ship*']")
    bad = [w for w in whole + prefixes if "*" in w]
    if bad:
        raise ConfigError(f"'*' may only end a keyword (a prefix, as in 'ship*'); got {bad}")
    parts = [re.escape(w) for w in whole] + [re.escape(w) + r"\w*" for w in prefixes]
    return re.compile(r"\b(?:" + "|".join(parts) + r")\b", re.IGNORECASE)


def keyword_scorer(words: Sequence[str]) -> Scorer:
    """On-concept when any keyword occurs (`keyword_pattern`'s rules). The keyword list is the whole
    definition, so a rerun scores identically."""
    pattern = keyword_pattern(words)
    return lambda texts: [bool(pattern.search(text)) for text in texts]


def embedding_scorer(concept: str, threshold: float = 0.35, encoder: HookedModel | None = None) -> Scorer:
    """On-concept when the MiniLM sentence embedding (`rama.activations.sentence_embeddings`) of a
    continuation has cosine ≥ `threshold` with the concept description's."""
    embed = SentenceEmbedder(encoder) if encoder is not None else sentence_embedder()
    target = embed([concept])[0]  # [d_model]
    return lambda texts: [bool(c >= threshold) for c in (embed(texts) @ target).tolist()]


def continuation_perplexity(
    model: HookedModel, prompts: Sequence[str], continuations: Sequence[str]
) -> list[float]:
    """Perplexity of each continuation given its prompt, under the model with no hooks."""
    values = []
    for prompt, continuation in zip(prompts, continuations, strict=True):
        prompt_ids = model.to_tokens(prompt)[0]
        full = model.to_tokens(prompt + continuation)[0]
        start = len(prompt_ids)
        if len(full) <= start:
            values.append(float("nan"))
            continue
        with torch.no_grad():
            logits = model(full[None])[0]
        losses = torch.nn.functional.cross_entropy(
            logits[start - 1 : -1].float(), full[start:], reduction="mean"
        )
        values.append(float(losses.exp()))
    return values


@dataclass
class SweepPoint:
    strength: float
    concept_rate: float
    perplexity: float  # median over prompts, under the unsteered model
    examples: list[str] = field(default_factory=list)


@dataclass
class SweepResult:
    points: list[SweepPoint]
    scorer: str
    site: str

    def baseline(self) -> SweepPoint:
        return min(self.points, key=lambda p: abs(p.strength))

    def best(self, max_perplexity_ratio: float = 2.0) -> SweepPoint | None:
        """The highest concept rate among strengths whose perplexity stays under the ratio."""
        return best_fluent(self.points, self.baseline().perplexity * max_perplexity_ratio)

    def save(self, path: str | os.PathLike[str]) -> None:
        record = {"scorer": self.scorer, "site": self.site, "points": [asdict(p) for p in self.points]}
        write_text(path, json.dumps(record, indent=1))


def rate_then_fluency(point: SweepPoint) -> tuple[float, float]:
    """The order of steering outcomes: a higher concept rate, then a lower perplexity."""
    return point.concept_rate, -point.perplexity


def best_fluent(points: Sequence[SweepPoint], perplexity_limit: float) -> SweepPoint | None:
    """The highest concept rate among points under the perplexity limit (ties: the lower perplexity)."""
    fluent = [p for p in points if p.perplexity < perplexity_limit]
    return max(fluent, key=rate_then_fluency) if fluent else None


def strength_sweep(
    model: HookedModel,
    hooks_at: Callable[[float], list[Hook]],
    prompts: Sequence[str],
    strengths: Sequence[float],
    scorer: Scorer,
    scorer_name: str = "",
    site: str = "",
    max_new_tokens: int = 30,
) -> SweepResult:
    """Greedy continuations of every prompt at every strength (0 = unsteered), scored and measured.
    A strength that makes the logits NaN or inf is a `SteeringOverflowError`, not empty text."""
    if not prompts:
        raise InputError("a sweep needs at least one prompt")
    points = []
    for strength in tqdm(list(strengths), desc="strengths", unit="strength"):
        hooks = hooks_at(strength) if strength != 0 else []
        if hooks:
            check_finite_output(model, list(prompts), hooks)
        texts = model.generate(list(prompts), max_new_tokens=max_new_tokens, fwd_hooks=hooks)
        assert isinstance(texts, list)
        continuations = [
            text[len(prompt) :] if text.startswith(prompt) else text
            for text, prompt in zip(texts, prompts, strict=True)
        ]
        on_concept = scorer(continuations)
        perplexities = torch.tensor(continuation_perplexity(model, prompts, continuations))
        points.append(
            SweepPoint(
                strength=float(strength),
                concept_rate=sum(on_concept) / len(on_concept),
                perplexity=float(perplexities.nanmedian()),
                examples=[f"{p}|{c}" for p, c in zip(prompts[:3], continuations[:3], strict=True)],
            )
        )
    return SweepResult(points, scorer_name, site)


def rank_by_steering(
    model: HookedModel,
    candidates: Mapping[Key, Callable[[float], list[Hook]]],
    prompts: Sequence[str],
    strengths: Sequence[float],
    scorer: Scorer,
    max_perplexity_ratio: float = 2.0,
    max_new_tokens: int = 30,
) -> list[tuple[Key, SweepPoint | None]]:
    """Candidates (SAE latents, vectors) ordered by the best concept rate each reaches on `prompts` while
    perplexity stays under `max_perplexity_ratio` × the unsteered one (ties: the lower perplexity);
    None, last, for one that never does. What a latent reads or writes one step ahead only predicts
    this; with a few candidates it is cheap to measure, on prompts kept apart from any evaluation."""
    steered = [s for s in strengths if s != 0]
    if not steered:
        raise ConfigError(f"rank_by_steering needs a non-zero strength to steer at; got {list(strengths)}")
    unsteered = strength_sweep(model, lambda _: [], prompts, [0.0], scorer, max_new_tokens=max_new_tokens)
    limit = unsteered.points[0].perplexity * max_perplexity_ratio
    found: list[tuple[Key, SweepPoint | None]] = []
    for key, hooks_at in candidates.items():
        points = strength_sweep(
            model, hooks_at, prompts, steered, scorer, max_new_tokens=max_new_tokens
        ).points
        found.append((key, best_fluent(points, limit)))
    return sorted(
        found,
        key=lambda item: (-1.0, 0.0) if item[1] is None else rate_then_fluency(item[1]),
        reverse=True,
    )


def plot_sweep(
    results: dict[str, SweepResult],
    path: str | os.PathLike[str],
    title: str = "",
    strength_label: str = "steering strength (a clamp value or an ActAdd coefficient)",
) -> Path:
    """Concept rate and perplexity against strength, one line per steering method."""
    plt = pyplot()
    figure, (rate_axis, ppl_axis) = plt.subplots(1, 2, figsize=(11, 3.8))
    figure.subplots_adjust(wspace=0.35)
    for name, result in results.items():
        strengths = [p.strength for p in result.points]
        rate_axis.plot(strengths, [p.concept_rate for p in result.points], marker="o", label=name)
        ppl_axis.plot(strengths, [p.perplexity for p in result.points], marker="o", label=name)
        ppl_axis.axhline(2 * result.baseline().perplexity, color="0.6", ls=":", lw=1)
    rate_axis.set_ylim(-0.05, 1.05)
    rate_axis.axhline(0.8, color="0.6", ls=":", lw=1)
    rate_axis.set_xlabel(strength_label)
    rate_axis.set_ylabel("concept rate (share of continuations)")
    ppl_axis.set_xlabel(strength_label)
    ppl_axis.set_ylabel("perplexity under the unsteered model")
    ppl_axis.set_yscale("log")
    rate_axis.legend(fontsize=8)
    figure.suptitle(title or "steering sweep (dotted: concept rate 0.8; 2× the unsteered perplexity)")
    return save_figure(figure, path)
