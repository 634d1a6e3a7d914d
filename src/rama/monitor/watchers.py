"""What a monitor watches: probes (alarm score 1 − p at the current token) and SAE latents (the latent's
activation at the current token), grouped by the site they read so that one matmul scores every probe at
a site.

A probe's token selection (last, mean, span, every) describes how it was trained on statements; during
generation there is only the current token, so every probe scores the current token's activation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from rama.errors import ConfigError
from rama.features.builder import check_fit
from rama.hooks.model import HookedModel
from rama.models.fingerprint import weights_fingerprint
from rama.probes import TrainedProbe, check_probe_fits
from rama.sae.base import SAE


@dataclass(frozen=True)
class ProbeWatcher:
    """A trained probe; its score is the alarm 1 − p, flagged above `threshold` (in [0, 1])."""

    name: str
    probe: TrainedProbe
    threshold: float

    @property
    def site(self) -> str:
        return self.probe.site

    def __post_init__(self) -> None:
        if not (isinstance(self.threshold, int | float) and 0 <= self.threshold <= 1):
            raise ConfigError(
                f"watcher {self.name!r}: threshold {self.threshold!r} is outside [0, 1]; a probe's alarm score "
                "1 - p is a probability, so its threshold must lie in [0, 1] (e.g. 0.9)"
            )
        if self.probe.probe.latents is not None:
            raise ConfigError(
                f"watcher {self.name!r} is a ksparse probe, which reads SAE latents; the monitor watches "
                "probes on a site's activations (train a logistic or diffmean probe) or SAE latents directly"
            )


@dataclass(frozen=True)
class LatentWatcher:
    """One SAE latent; its score is the latent's activation, flagged above `threshold` (None: not yet
    calibrated, see `rama.monitor.calibrate`)."""

    name: str
    sae: SAE = field(repr=False)
    latent: int
    threshold: float | None = None

    @property
    def site(self) -> str:
        return self.sae.cfg.hook_name

    def __post_init__(self) -> None:
        self.sae.check_latents([self.latent])
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ConfigError(f"watcher {self.name!r}: threshold {self.threshold} must be a finite number")


Watcher = ProbeWatcher | LatentWatcher


def probe_watcher(probe: TrainedProbe, name: str, threshold: float | None = None) -> ProbeWatcher:
    """A watcher for `probe` with its calibrated threshold from the probe file, or `threshold`."""
    return ProbeWatcher(name, probe, probe.threshold if threshold is None else threshold)


def check_watchers(model: HookedModel, watchers: list[Watcher]) -> None:
    """Every probe fits the model (same weights fingerprint, same site width), every SAE reads a site of
    the model at its width, and the names are unique."""
    if not watchers:
        raise ConfigError("a monitor needs at least one watcher: give a probe or an SAE latent")
    names = [w.name for w in watchers]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"watcher names must be unique; {', '.join(twice)} appear more than once")
    probes = [w for w in watchers if isinstance(w, ProbeWatcher)]
    if probes:
        fingerprint = weights_fingerprint(model.hf)
        for probe in probes:
            check_probe_fits(probe.probe, model, fingerprint)
    checked: set[int] = set()
    for watcher in watchers:
        if isinstance(watcher, LatentWatcher) and id(watcher.sae) not in checked:
            check_fit(watcher.sae, model)
            checked.add(id(watcher.sae))


class SiteScorer:
    """Scores every watcher that reads one site from that site's activation `[batch, pos, d]`:
    all probes in one matmul (weights folded: (x − mean) / scale · w + b = x · (w / scale) + b'),
    each SAE once for all its watched latents. Returns `[batch, pos, n]` in the order of `columns`."""

    def __init__(self, site: str, watchers: list[tuple[int, Watcher]], device: torch.device) -> None:
        self.site = site
        probes = [(i, w) for i, w in watchers if isinstance(w, ProbeWatcher)]
        latents = [(i, w) for i, w in watchers if isinstance(w, LatentWatcher)]
        self.columns = [i for i, _ in probes]  # then the latents, grouped by SAE
        self.weight: torch.Tensor | None = None  # [d, n_probes]
        self.bias: torch.Tensor | None = None  # [n_probes]
        if probes:
            folded = [fold(w.probe) for _, w in probes]
            self.weight = torch.stack([f[0] for f in folded], dim=1).to(device)
            self.bias = torch.tensor([f[1] for f in folded], dtype=torch.float32, device=device)
        self.saes: list[tuple[SAE, torch.Tensor]] = []  # (sae, latent ids [m]) in first-seen order
        for sae in {id(w.sae): w.sae for _, w in latents}.values():
            mine = [(i, w) for i, w in latents if w.sae is sae]
            self.saes.append((sae, torch.tensor([w.latent for _, w in mine], device=device)))
            self.columns += [i for i, _ in mine]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.weight is not None and self.bias is not None:
            # alarm = 1 − sigmoid(logit) = sigmoid(−logit)
            parts.append(torch.sigmoid(-(x.float() @ self.weight + self.bias)))
        for sae, ids in self.saes:
            parts.append(sae.encode(x.to(sae.W_enc.dtype))[..., ids].float())
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def fold(probe: TrainedProbe) -> tuple[torch.Tensor, float]:
    """(w / scale `[d]`, b − (mean / scale) · w): the probe's logit as one affine map of the raw row."""
    linear = probe.probe
    weight = linear.direction.float() / linear.scale.float()
    return weight, float(linear.bias - (linear.mean.float() @ weight))
