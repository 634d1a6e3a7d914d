"""Train, sweep and evaluate probes: activations from one model pass over every site, a split by group,
fitting on the train side only, choosing the site on the validation side, reporting on the test side, and
an alarm threshold set on ordinary control text at a fixed false-positive rate."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

from rama.errors import ConfigError, InputError
from rama.hooks.model import HookedModel
from rama.models.fingerprint import weights_fingerprint
from rama.probes.datasets import ProbeDataset
from rama.probes.gather import REDUCTIONS, TOKEN_SELECTIONS, Gathered, gather
from rama.probes.kinds import KINDS, LinearProbe, fit_probe
from rama.probes.probe_metrics import (
    accuracy,
    alarm_threshold,
    label_auroc,
    recall_above,
    reliability,
)
from rama.probes.splits import split_by_group
from rama.sae import SAE
from rama.sae.base import setting


@dataclass(frozen=True)
class ProbeConfig:
    """How a probe is trained; `rama probe train` takes these fields as options."""

    kind: str = setting("logistic", f"probe kind: {' | '.join(KINDS)}")
    token: str = setting("last", f"token selection: {' | '.join(TOKEN_SELECTIONS)}")
    seed: int = setting(0, "seed of the split, the false statements and CCS/LAT")
    val_fraction: float = setting(0.2, "share of groups for validation (chooses the layer in a sweep)")
    test_fraction: float = setting(0.2, "share of groups held out for the reported metrics")
    control: int = setting(500, "ordinary sentences from the built-in corpus that set the alarm threshold")
    fpr: float = setting(0.01, "false-positive rate on the control sentences the threshold is set for")
    k: int = setting(16, "ksparse: SAE latents kept")
    limit: int | None = setting(None, "use only the first LIMIT groups of the dataset")
    batch_size: int = setting(32, "statements per forward pass")
    progress: bool = setting(True, "show progress bars")

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"probe kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.token not in TOKEN_SELECTIONS:
            raise ConfigError(f"token selection {self.token!r} is not one of {', '.join(TOKEN_SELECTIONS)}")
        if not 0 < self.fpr < 1:
            raise ConfigError(f"fpr {self.fpr} must lie strictly between 0 and 1 (e.g. 0.01)")
        if self.control < 1 or self.batch_size < 1 or self.k < 1:
            raise ConfigError("control, batch_size and k must each be at least 1")


@dataclass
class TrainedProbe:
    """A fitted probe with everything needed to apply it elsewhere and to check that it may be."""

    probe: LinearProbe
    site: str
    token: str
    threshold: float  # alarm (1 − p) threshold
    fpr: float  # the control false-positive rate the threshold was set for
    meta: dict[str, Any] = field(default_factory=dict)


def site_rows(gathered: Gathered, site: str, sae: SAE | None) -> torch.Tensor:
    """`[rows, d]` activations at `site`, or `[rows, d_sae]` SAE latents when an SAE is given."""
    rows = gathered.acts[site]
    if sae is None:
        return rows
    with torch.no_grad():
        return sae.encode(rows.to(sae.W_enc.dtype)).float()


def statement_probabilities(
    probe: LinearProbe, rows: torch.Tensor, item: torch.Tensor, n: int
) -> torch.Tensor:
    """`[n]` p per statement: a row's own p, or the mean over its statement's rows (token `every`)."""
    probs = probe.probabilities(rows)
    if len(item) == n and bool((item == torch.arange(n)).all()):
        return probs
    total = torch.zeros(n).index_add_(0, item, probs)
    return total / torch.zeros(n).index_add_(0, item, torch.ones_like(probs)).clamp_min(1)


def fit_on(
    kind: str, gathered: Gathered, site: str, dataset: ProbeDataset, train: list[int], config: ProbeConfig,
    sae: SAE | None = None,
) -> LinearProbe:  # fmt: skip
    """Fit on the rows of the `train` statements (token `every`: each token labelled as its statement)."""
    rows, item = site_rows(gathered, site, sae), gathered.item
    pick = torch.isin(item, torch.tensor(train))
    chosen = item[pick]
    labels = torch.tensor(dataset.labels)[chosen]
    groups = [dataset.groups[int(i)] for i in chosen]
    position = {int(i): r for r, i in enumerate(chosen)}
    true_ids, false_ids = dataset.subset(train).pairs()
    if kind in ("ccs", "lat") and len(chosen) != len(train):
        raise InputError(f"{kind} needs one row per statement: use token selection last, mean or span")
    pairs = ([position[train[i]] for i in true_ids], [position[train[i]] for i in false_ids])
    return fit_probe(kind, rows[pick], labels, groups, pairs, seed=config.seed, k=config.k)


def sites_for(model: HookedModel, site: str | list[str]) -> list[str]:
    names = model.resolve([site] if isinstance(site, str) else site)
    if not names:
        raise InputError(
            f"site {site!r} matches no site of {model.cfg.name}; see `rama sites {model.cfg.name}`"
        )
    return names


def layer_of(site: str) -> int | None:
    match = re.match(r"blocks\.(\d+)\.", site)
    return int(match.group(1)) if match else None


def sweep(
    model: HookedModel, dataset: ProbeDataset, site: str | list[str], kinds: list[str], config: ProbeConfig,
    sae: SAE | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Validation and test AUROC of every kind at every site `site` (a glob or a list) names, from one
    model pass."""
    split = split_by_group(dataset, config.seed, config.val_fraction, config.test_fraction)
    names = sites_for(model, site)
    gathered = gather(model, list(dataset.texts), names, config.token, config.batch_size, config.progress)
    labels = torch.tensor(dataset.labels)
    results = []
    for name in names:
        for kind in kinds:
            probe = fit_on(kind, gathered, name, dataset, split.train, config, sae)
            probs = statement_probabilities(
                probe, site_rows(gathered, name, sae), gathered.item, len(dataset)
            )
            results.append({"site": name, "layer": layer_of(name), "kind": kind,
                            "val_auroc": label_auroc(probs[split.val], labels[split.val]) if split.val else None,
                            "test_auroc": label_auroc(probs[split.test], labels[split.test])})  # fmt: skip
    return results


def best_rows(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per kind, the sweep row with the highest validation AUROC (test AUROC where there is no val)."""
    best: dict[str, dict[str, Any]] = {}
    for row in results:
        score = row["val_auroc"] if row["val_auroc"] is not None else row["test_auroc"]
        held = best.get(row["kind"])
        if held is None or score > (
            held["val_auroc"] if held["val_auroc"] is not None else held["test_auroc"]
        ):
            best[row["kind"]] = row
    return best


def evaluate(probs: torch.Tensor, labels: torch.Tensor, threshold: float, fpr: float) -> dict[str, Any]:
    """The metrics `rama probe eval` prints: AUROC, accuracy at p = 0.5, recall of label-0 statements at
    the control-set alarm threshold, expected calibration error and the reliability curve."""
    curve = reliability(probs, labels)
    return {
        "auroc": label_auroc(probs, labels),
        "accuracy": accuracy(probs, labels),
        f"recall_at_{fpr * 100:g}pct_fpr".replace(".", "_"): recall_above(1 - probs[labels == 0], threshold),
        "ece": curve.ece(),
        "threshold": threshold,
        "items": len(labels),
        "reliability": {"confidence": curve.confidence, "frequency": curve.frequency, "counts": curve.counts},
    }


def train_probe(
    model: HookedModel, dataset: ProbeDataset, site: str, control_texts: list[str], config: ProbeConfig,
    sae: SAE | None = None,
) -> TrainedProbe:  # fmt: skip
    """Fit `config.kind` at `site` (a glob: the best layer by validation AUROC, all from one pass), set its
    alarm threshold on `control_texts` at `config.fpr`, and record its test-side metrics."""
    if config.kind == "ksparse" and sae is None:
        raise ConfigError("the ksparse probe reads SAE latents: give the SAE (--sae DIR)")
    split = split_by_group(dataset, config.seed, config.val_fraction, config.test_fraction)
    names = sites_for(model, sae.cfg.hook_name if sae is not None and config.kind == "ksparse" else site)
    if len(names) > 1 and not split.val:
        raise ConfigError("choosing among several sites needs a validation split (val_fraction > 0)")
    gathered = gather(model, list(dataset.texts), names, config.token, config.batch_size, config.progress)
    labels = torch.tensor(dataset.labels)
    fits = []
    for name in names:
        probe = fit_on(config.kind, gathered, name, dataset, split.train, config, sae)
        probs = statement_probabilities(probe, site_rows(gathered, name, sae), gathered.item, len(dataset))
        side = split.val if len(names) > 1 else split.test
        fits.append((label_auroc(probs[side], labels[side]), name, probe, probs))
    _, chosen, probe, probs = max(fits, key=lambda fit: fit[0])
    control = gather(model, control_texts, [chosen], config.token, config.batch_size, config.progress)
    control_p = statement_probabilities(
        probe, site_rows(control, chosen, sae), control.item, len(control_texts)
    )
    threshold = alarm_threshold(1 - control_p, config.fpr)
    meta = {
        "model": model.cfg.name, "fingerprint": weights_fingerprint(model.hf), "width": int(gathered.acts[chosen].shape[1]),
        "reduction": REDUCTIONS[config.token], "data": dataset.summary(),
        "split": {"seed": config.seed, "val_fraction": config.val_fraction, "test_fraction": config.test_fraction,
                  "train": len(split.train), "val": len(split.val), "test": len(split.test)},
        "control": {"source": "built-in corpus sentences", "items": len(control_texts)},
        "sweep": [{"site": name, "auroc": auroc} for auroc, name, _, _ in fits],
        "test": evaluate(probs[split.test], labels[split.test], threshold, config.fpr),
        "fit": dict(probe.info), "k": config.k,
    }  # fmt: skip
    return TrainedProbe(probe, chosen, config.token, threshold, config.fpr, meta)


def score_dataset(
    trained: TrainedProbe, model: HookedModel, dataset: ProbeDataset, batch_size: int = 32,
    sae: SAE | None = None, progress: bool = False,
) -> torch.Tensor:  # fmt: skip
    """`[n]` p of every statement of `dataset` under a trained probe."""
    gathered = gather(model, list(dataset.texts), [trained.site], trained.token, batch_size, progress)
    return statement_probabilities(
        trained.probe, site_rows(gathered, trained.site, sae), gathered.item, len(dataset)
    )
