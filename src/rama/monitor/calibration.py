"""Thresholds set on ordinary text: every watcher's aggregated score over every token of control sentences
(`rama.probes.control_sentences`), and the threshold that at most a fraction `fpr` of those tokens
exceed. A token-level rate: a sentence of 20 tokens has 20 chances to raise a false alarm."""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from tqdm import tqdm

from rama.errors import ConfigError, InputError
from rama.monitor.monitor import Monitor
from rama.monitor.watchers import Watcher


def token_threshold(scores: torch.Tensor, fpr: float) -> float:
    """The ⌊fpr · n⌋ + 1-th largest of `scores` `[n]`: at most ⌊fpr · n⌋ of them lie strictly above it
    (flagging is strict, as for the probes' alarm threshold)."""
    if not 0 < fpr < 1:
        raise ConfigError(f"fpr {fpr} must lie strictly between 0 and 1 (e.g. 0.01)")
    if scores.numel() == 0:
        raise InputError("no control tokens to calibrate on; give at least one control sentence")
    rank = min(math.floor(fpr * scores.numel()) + 1, scores.numel())
    return float(scores.double().topk(rank).values[-1])


def control_scores(
    monitor: Monitor, texts: list[str], skip_first: bool = True, progress: bool = False
) -> torch.Tensor:
    """`[tokens, n]` aggregated scores of every token of every text (position 0 left out when
    `skip_first`: an attention sink, and a monitor does not flag prompt tokens by default)."""
    rows = []
    for text in tqdm(texts, desc="calibrating", unit="text", disable=not progress):
        with monitor.watch(calibrating=True, flag_all=True) as run, torch.no_grad():
            monitor.model(monitor.model.to_tokens(text))
        rows.append(run.scores[1:] if skip_first and len(run.scores) > 1 else run.scores)
    return torch.cat(rows)


def calibrate(
    monitor: Monitor, texts: list[str], fpr: float = 0.01, which: str = "missing", progress: bool = False
) -> Monitor:
    """A copy of `monitor` whose watchers (`which`: "missing" — those without a threshold — or "all")
    have thresholds set on the control `texts` at token-level false-positive rate `fpr`."""
    if which not in ("missing", "all"):
        raise ConfigError(f"which must be 'missing' or 'all', not {which!r}")
    targets = [i for i, w in enumerate(monitor.watchers) if which == "all" or w.threshold is None]
    if not targets:
        return monitor
    if not texts:
        raise InputError("no control texts to calibrate on")
    scores = control_scores(monitor, texts, progress=progress)
    watchers: list[Watcher] = list(monitor.watchers)
    for column in targets:
        threshold = token_threshold(scores[:, column], fpr)
        watchers[column] = replace(watchers[column], threshold=threshold)
    return monitor.with_watchers(watchers)
