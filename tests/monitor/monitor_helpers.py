"""A tiny word-level Llama with two trained probes (blocks 0 and 1) and a tiny SAE at block 1."""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import torch

from features.feature_helpers import tiny_model, tiny_sae
from probes.probe_helpers import control_words, word_statements
from rama.hooks.model import HookedModel
from rama.monitor import LatentWatcher, Monitor, MonitorConfig, probe_watcher
from rama.probes import ProbeConfig, TrainedProbe, train_probe
from rama.sae import SAE

SITE0, SITE1 = "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"
PROMPT = "w40 w41 w42 w10"


@cache
def parts() -> tuple[HookedModel, TrainedProbe, TrainedProbe, SAE]:
    """Built once per test process (a second or so): the model, two difference-of-means probes (block 1,
    given a standardisation as logistic probes have, so that folding it into the weights is tested; and
    block 0), and the SAE."""
    model = tiny_model()
    data, control = word_statements(40), control_words()
    config = ProbeConfig(kind="diffmean", progress=False, control=40)
    fitted = train_probe(model, data, SITE1, control, config)
    scale = torch.linspace(0.5, 2.0, fitted.probe.scale.shape[0])  # [d], like a training std
    standardised = replace(fitted.probe, scale=scale, direction=fitted.probe.direction * scale)
    logistic = replace(fitted, probe=standardised)
    diffmean = train_probe(model, data, SITE0, control, config)
    return model, logistic, diffmean, tiny_sae()


def tiny_monitor(config: MonitorConfig | None = None, latent_threshold: float | None = 0.5) -> Monitor:
    model, logistic, diffmean, sae = parts()
    watchers = [probe_watcher(logistic, "logistic"), probe_watcher(diffmean, "diffmean"),
                LatentWatcher("latent 3", sae, 3, latent_threshold), LatentWatcher("latent 7", sae, 7, 0.0)]  # fmt: skip
    return Monitor(model, watchers, config or MonitorConfig())
