"""`rama probe train`: fit a probe at a site (a glob sweeps every matching layer in one pass and keeps
the best on the validation split) and write a portable probe folder; `rama probe eval`: its AUROC,
accuracy, recall at the calibrated false-positive rate and calibration error on a dataset."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rama.cli import probe_capability
from rama.cli.options import add_options, from_args, option
from rama.errors import ConfigError

TRAIN_EXAMPLE = (
    "example: rama probe train --model smollm2-135m --site 'blocks.*.hook_resid_post' --data cities "
    "--kind logistic --out cities-probe"
)
EVAL_EXAMPLE = "example: rama probe eval cities-probe --data neg_cities --json"


@dataclass(frozen=True)
class TrainPaths:
    model: str = option("smollm2-135m", "built-in name, local HF folder or hub id")
    site: str = option(
        "", "site or glob, e.g. blocks.12.hook_resid_post or 'blocks.*.hook_resid_post' (required)"
    )
    data: str = option("", "a built-in dataset (cities, neg_cities, ...) or a .jsonl/.csv file (required)")
    out: str = option("", "output folder for probe.json and probe.safetensors (required)")
    sae: str | None = option(None, "SAE folder whose latents a ksparse probe reads")
    corpus: str | None = option(None, "corpus of the control sentences (default: the built-in corpus)")


@dataclass(frozen=True)
class EvalOptions:
    probe: str = option("", "the probe folder", positional=True)
    data: str = option("", "a built-in dataset or a .jsonl/.csv file (required)")
    json: bool = option(False, "print the metrics as one JSON object")
    limit: int | None = option(None, "use only the first LIMIT groups of the dataset")
    batch_size: int = option(32, "statements per forward pass")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `probe` command group to `rama`."""
    from rama.probes.training import ProbeConfig

    group = subparsers.add_parser("probe", help="train and evaluate linear probes")
    commands = group.add_subparsers(dest="probe_command", metavar="COMMAND")
    train = commands.add_parser(
        "train", help="fit a probe and save it as a portable folder", epilog=TRAIN_EXAMPLE
    )
    add_options(train, TrainPaths)
    add_options(train, ProbeConfig)
    train.set_defaults(handler=run_train)
    evaluate = commands.add_parser("eval", help="a saved probe's metrics on a dataset", epilog=EVAL_EXAMPLE)
    add_options(evaluate, EvalOptions)
    evaluate.set_defaults(handler=run_eval)
    probe_capability.register(commands)


def run_train(args: argparse.Namespace) -> int:
    import rama
    from rama.atomic import check_empty_output
    from rama.probes import control_sentences, load_dataset, save_probe, split_by_group, train_probe
    from rama.probes.training import ProbeConfig
    from rama.sae import SAE

    paths, config = from_args(TrainPaths, args), from_args(ProbeConfig, args)
    for name in ("site", "data", "out"):
        if not getattr(paths, name) and not (name == "site" and paths.sae):
            raise ConfigError(f"--{name} is required; {TRAIN_EXAMPLE}")
    check_empty_output(paths.out)
    dataset = load_dataset(paths.data, limit=config.limit, seed=config.seed)
    split_by_group(dataset, config.seed, config.val_fraction, config.test_fraction)  # refuse before loading
    sae = SAE.load(paths.sae) if paths.sae else None
    model = rama.load(paths.model)
    control = control_sentences(config.control, config.seed, paths.corpus)
    trained = train_probe(model, dataset, paths.site or "", control, config, sae)
    if paths.sae:
        trained.meta["sae"] = str(Path(paths.sae).resolve())
    trained.meta["config"] = asdict(config)
    save_probe(trained, paths.out)
    test = trained.meta["test"]
    print(f"{config.kind} probe at {trained.site} ({trained.token} token) -> {paths.out}")
    print_metrics(test)
    return 0


def print_metrics(metrics: dict[str, Any]) -> None:
    recall = next(key for key in metrics if key.startswith("recall_at_"))
    print(f"AUROC {metrics['auroc']:.4f}   accuracy {metrics['accuracy']:.4f}   "
          f"{recall.replace('_', ' ').replace('pct', '%')} {metrics[recall]:.4f}   "
          f"calibration error (ECE) {metrics['ece']:.4f}   on {metrics['items']} statements")  # fmt: skip


def run_eval(args: argparse.Namespace) -> int:
    import torch

    import rama
    from rama.probes import (
        check_probe_fits,
        evaluate,
        load_dataset,
        load_probe,
        score_dataset,
        split_by_group,
    )
    from rama.sae import SAE

    options = from_args(EvalOptions, args)
    if not options.data:
        raise ConfigError(f"--data is required; {EVAL_EXAMPLE}")
    trained = load_probe(options.probe)
    config = trained.meta.get("config", {})
    dataset = load_dataset(options.data, limit=options.limit, seed=int(config.get("seed", 0)))
    held_out = same_training_data(trained.meta, dataset.name)
    if held_out:  # the data it was trained on: only the held-out test groups
        split = split_by_group(dataset, int(config.get("seed", 0)), float(config.get("val_fraction", 0.2)),
                               float(config.get("test_fraction", 0.2)))  # fmt: skip
        dataset = dataset.subset(split.test)
    model = rama.load(trained.meta["model"])
    check_probe_fits(trained, model)
    sae = SAE.load(trained.meta["sae"]) if trained.probe.kind == "ksparse" else None
    probs = score_dataset(trained, model, dataset, options.batch_size, sae)
    metrics = evaluate(probs, torch.tensor(dataset.labels), trained.threshold, trained.fpr)
    metrics.update(dataset=dataset.name, held_out_split=held_out, site=trained.site, kind=trained.probe.kind)
    if options.json:
        print(json.dumps(metrics))
    else:
        print(f"{trained.probe.kind} probe at {trained.site} on {dataset.name}"
              f"{' (held-out test groups)' if held_out else ''}")  # fmt: skip
        print_metrics(metrics)
    return 0


def same_training_data(meta: dict[str, Any], name: str) -> bool:
    data = meta.get("data", {})
    return bool(data.get("name") == name)
