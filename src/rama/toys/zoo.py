"""The shipped toy models and how each is rebuilt from its seed (`rama toys train NAME`)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from rama.atomic import check_empty_output, write_text
from rama.errors import ConfigError
from rama.toys.figures import (
    plot_dimensionality,
    plot_feature_geometry,
    plot_phase_diagram,
    plot_training_curves,
)
from rama.toys.induction import InductionTask, train_induction
from rama.toys.ioi import IOITask
from rama.toys.ioi_circuit import train_ioi
from rama.toys.superposition import (
    ToyConfig,
    dimensionality_sweep,
    geometric_importance,
    phase_diagram,
    train_toy,
)
from rama.toys.toy_transformer import TrainSchedule, save_toy

WEIGHTS = Path(__file__).parent / "weights"
TRANSFORMERS = {
    "induction-2l": "2-layer attention-only GPT-2 that copies repeated random sequences by induction",
    "induction-1l": "1-layer attention-only GPT-2 on the same task: it cannot form an induction circuit",
    "ioi": "3-layer GPT-2 trained on synthetic indirect-object identification (held-out name pairs)",
}
TOYS = {
    **TRANSFORMERS,
    "superposition": "Toy Models of Superposition: geometry, phase diagram, dimensionality",
}
ALIASES = {"induction": "induction-2l"}


def pretrained(name: str) -> Path:
    """The folder of a shipped toy transformer (`rama.load(rama.toys.pretrained("induction-2l"))`)."""
    if name not in TRANSFORMERS:
        raise ConfigError(f"unknown toy model {name!r}; shipped toys: {', '.join(TRANSFORMERS)}")
    return WEIGHTS / name


def train_transformer(
    name: str, seed: int = 0, steps: int | None = None, progress: bool = True
) -> tuple[Any, ...]:
    """(model, tokenizer, curve, ground truth) of a toy transformer, from its seed."""
    if name.startswith("induction"):
        schedule = TrainSchedule(steps=2000, batch_size=64, lr=3e-3, seed=seed, progress=progress)
        schedule = replace(schedule, steps=steps) if steps else schedule
        return train_induction(n_layers=int(name[-2]), task=InductionTask(), schedule=schedule)
    if name == "ioi":
        schedule = TrainSchedule(
            steps=1500, batch_size=64, lr=2e-3, log_every=50, seed=seed, progress=progress
        )
        schedule = replace(schedule, steps=steps) if steps else schedule
        return train_ioi(IOITask(seed=seed), schedule)
    raise ConfigError(f"unknown toy transformer {name!r}; choose one of {', '.join(TRANSFORMERS)}")


def build(name: str, out: str | os.PathLike[str], seed: int = 0, steps: int | None = None) -> Path:
    """Train toy `name` from `seed` into `out` (an HF folder with ground truth, or superposition
    figures). Settings and the output folder (empty or absent) are checked before any training."""
    name = ALIASES.get(name, name)
    if name not in TOYS:
        raise ConfigError(f"unknown toy {name!r}; choose one of {', '.join(TOYS)}")
    if steps is not None and steps < 1:
        raise ConfigError(f"steps must be at least 1; got {steps}")
    check_empty_output(out)
    if name == "superposition":
        return build_superposition(out, seed)
    model, tokenizer, curve, truth = train_transformer(name, seed, steps)
    folder = save_toy(out, model, tokenizer, truth, curve)
    key = "test_accuracy" if name == "ioi" else "loss_repeated"
    label = "held-out accuracy" if name == "ioi" else "loss on the repeated positions (nats)"
    plot_training_curves({name: curve}, key, folder / "training_curve.png", f"{name}: training", label)
    return folder


def build_superposition(out: str | os.PathLike[str], seed: int = 0) -> Path:
    """Figures and numbers of the three superposition reproductions, written into `out` beside
    whatever it holds (the docs folder, for examples/superposition.py), each file atomically."""
    final = Path(out)
    final.mkdir(parents=True, exist_ok=True)
    sparsity = torch.tensor([0.0, 0.7, 0.9, 0.95])
    geometry = train_toy(ToyConfig(seed=seed), sparsity, geometric_importance(5, 4, 0.9))
    plot_feature_geometry(geometry, final / "pentagon.png")
    diagram = phase_diagram(
        config=ToyConfig(n_features=2, n_hidden=1, steps=4000, batch_size=1024, seed=seed)
    )
    plot_phase_diagram(diagram, final / "phase_diagram.png")
    sweep = dimensionality_sweep()
    plot_dimensionality(sweep, final / "dimensionality.png")
    summary = {
        "geometry": {"sparsity": sparsity.tolist(), "feature_norms": geometry.feature_norms().tolist()},
        "phase_diagram": {
            "densities": diagram.densities.tolist(),
            "importances": diagram.importances.tolist(),
            "labels": diagram.labels.tolist(),
            "label_names": ["not represented", "dedicated dimension", "superposition"],
        },
        "dimensionality": {
            "sparsity": sweep.sparsity.tolist(),
            "D": sweep.dimensionality().tolist(),
            "feature_norms": sweep.feature_norms().tolist(),
        },
    }
    write_text(final / "superposition.json", json.dumps(summary))
    return final


def copy_pretrained(name: str, out: str | os.PathLike[str]) -> Path:
    """A writable copy of a shipped toy (the package folder may be read-only)."""
    target = Path(out)
    shutil.copytree(pretrained(name), target)
    return target
