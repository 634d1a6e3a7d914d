"""`rama toys`: rebuild the toy models whose answer is known, from a seed."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from rama.cli.options import add_options, from_args, option
from rama.errors import ConfigError, OutputError


@dataclass
class ToysTrainConfig:
    name: str = option(
        "", "which toy: induction-2l (or induction), induction-1l, ioi or superposition", positional=True
    )
    out: str = option("", "output folder (must not hold files yet)")
    seed: int = option(0, "random seed: the same seed rebuilds the same weights on the CPU")
    steps: int | None = option(None, "training steps (default: the recipe's own)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("toys", help="toy models with known circuits and superposition")
    commands = parser.add_subparsers(dest="toys_command", metavar="COMMAND")
    train = commands.add_parser(
        "train",
        help="train a toy from its seed",
        epilog="example: rama toys train induction-2l --out toys/induction-2l",
    )
    add_options(train, ToysTrainConfig)
    train.set_defaults(handler=run_train)
    listing = commands.add_parser("list", help="the toys and where the shipped ones lie")
    listing.set_defaults(handler=run_list)


def check_train(config: ToysTrainConfig) -> None:
    """Everything a toy run needs, checked before minutes of training: a known toy, a step count
    above zero, and an output folder that holds no files yet (a file there is refused too)."""
    from rama.toys.zoo import ALIASES, TOYS

    if ALIASES.get(config.name, config.name) not in TOYS:
        raise ConfigError(f"unknown toy {config.name!r}; choose one of {', '.join(TOYS)}")
    if config.steps is not None and config.steps < 1:
        raise ConfigError(f"--steps must be at least 1; got {config.steps}")
    if not config.out:
        raise ConfigError("give an output folder: --out DIR")
    out = Path(config.out)
    if out.is_file() or (out.is_dir() and any(out.iterdir())):
        raise OutputError(f"{str(out)!r} already holds files; choose another --out or remove it")


def run_train(args: argparse.Namespace) -> int:
    from rama.toys.zoo import build

    config = from_args(ToysTrainConfig, args)
    check_train(config)
    folder = build(config.name, config.out, config.seed, config.steps)
    truth = folder / "ground_truth.json"
    if truth.is_file():
        data = json.loads(truth.read_text())
        summary = {k: data[k] for k in ("heads", "loss_repeated", "test_accuracy") if k in data}
        print(json.dumps(summary))
    print(f"wrote {folder}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from rama.toys.zoo import TOYS, TRANSFORMERS, pretrained

    for name, description in TOYS.items():
        where = f"  shipped: {pretrained(name)}" if name in TRANSFORMERS else ""
        print(f"{name:14s} {description}{where}")
    return 0
