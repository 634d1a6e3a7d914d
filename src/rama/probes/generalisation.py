"""The generalisation matrix: train a probe on dataset X's train split, test it on dataset Y's test split,
for every pair (the diagonal is ordinary held-out AUROC). Splits are by group with one seed, so datasets
that share items (cities, neg_cities, instructed) keep each city on the same side everywhere."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from rama.hooks.model import HookedModel
from rama.plotting import pyplot, save_figure
from rama.probes.datasets import ProbeDataset
from rama.probes.gather import gather
from rama.probes.probe_metrics import label_auroc
from rama.probes.splits import split_by_group
from rama.probes.training import ProbeConfig, fit_on, statement_probabilities


@dataclass(frozen=True)
class GeneralisationMatrix:
    """`auroc[i][j]`: trained on `names[i]`, tested on `names[j]`."""

    names: list[str]
    auroc: list[list[float]]
    site: str
    kind: str

    def markdown(self) -> str:
        head = "| train ↓ / test → | " + " | ".join(self.names) + " |"
        rule = "|---|" + "---:|" * len(self.names)
        rows = [
            f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |"
            for name, row in zip(self.names, self.auroc, strict=True)
        ]
        return "\n".join([head, rule, *rows])

    def figure(self, path: str | os.PathLike[str]) -> Path:
        plt = pyplot()
        n = len(self.names)
        fig, ax = plt.subplots(figsize=(1.1 * n + 2.5, 0.9 * n + 1.8))
        image = ax.imshow(self.auroc, cmap="RdBu_r", vmin=0, vmax=1)
        ax.set_xticks(range(n), self.names, rotation=35, ha="right")
        ax.set_yticks(range(n), self.names)
        ax.set_xlabel("tested on (held-out split)")
        ax.set_ylabel("trained on")
        for i in range(n):
            for j in range(n):
                value = self.auroc[i][j]
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=9,
                        color="white" if abs(value - 0.5) > 0.3 else "black")  # fmt: skip
        ax.set_title(f"Probe generalisation: AUROC ({self.kind}, {self.site})", fontsize=10)
        fig.colorbar(image, ax=ax, label="AUROC (0.5 = chance)", fraction=0.046)
        return save_figure(fig, path)


def generalisation_matrix(
    model: HookedModel, datasets: list[ProbeDataset], site: str, config: ProbeConfig
) -> GeneralisationMatrix:
    """AUROC of a `config.kind` probe at one `site` for every (train, test) pair of `datasets`."""
    splits = [split_by_group(d, config.seed, config.val_fraction, config.test_fraction) for d in datasets]
    gathered = [
        gather(model, list(d.texts), [site], config.token, config.batch_size, config.progress)
        for d in datasets
    ]
    probes = [
        fit_on(config.kind, g, site, d, s.train, config)
        for d, g, s in zip(datasets, gathered, splits, strict=True)
    ]
    matrix = []
    for probe in probes:
        row = []
        for dataset, found, split in zip(datasets, gathered, splits, strict=True):
            probs = statement_probabilities(probe, found.acts[site], found.item, len(dataset))
            row.append(label_auroc(probs[split.test], torch.tensor(dataset.labels)[split.test]))
        matrix.append(row)
    return GeneralisationMatrix([d.name for d in datasets], matrix, site, config.kind)
