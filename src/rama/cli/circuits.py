"""`rama circuits ...`: head scores, lenses and circuit discovery.

Each subcommand registers itself with a `register_<name>(commands)` function, so the command
group grows one function at a time (`heads` here; lenses and attribution alongside).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from rama.cli.circuits_discover import register_discover, register_render
from rama.cli.circuits_ioi import register_ioi
from rama.cli.circuits_lens import register_lens
from rama.cli.options import add_options, from_args, option
from rama.errors import ConfigError, OutputError


@dataclass(frozen=True)
class HeadsConfig:
    model: str = option("smollm2-135m", "built-in name, local HF folder or hub id", positional=True)
    json: bool = option(False, "print the table as JSON: one key per score holding a [layer][head] list")
    out: str = option("", "folder for heatmap PNGs (one per score, and heads.png) and head_scores.json")
    batch: int = option(8, "sequences of repeated random tokens in the one forward pass")
    half: int = option(50, "random tokens per copy: each sequence is BOS, A, A with len(A) = half")
    seed: int = option(0, "seed of the random tokens")
    top: int = option(5, "heads listed per score in the text output")

    def __post_init__(self) -> None:
        if self.batch < 1 or self.half < 2 or self.top < 1:
            raise ConfigError(
                f"--batch and --top must be at least 1 and --half at least 2; got --batch {self.batch}, "
                f"--half {self.half}, --top {self.top}"
            )
        if self.out and Path(self.out).is_file():
            raise OutputError(f"--out {self.out!r} is a file; give a folder for the heatmaps")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `circuits` command group to `rama`."""
    group = subparsers.add_parser("circuits", help="head roles, lenses and circuits")
    commands = group.add_subparsers(dest="circuits_command", metavar="COMMAND")
    register_heads(commands)
    register_lens(commands)
    register_ioi(commands)
    register_discover(commands)
    register_render(commands)


def register_heads(commands: argparse._SubParsersAction) -> None:
    """`rama circuits heads MODEL`: the layer × head table of head scores."""
    heads = commands.add_parser(
        "heads",
        help="previous-token, duplicate-token, induction and copying score of every head",
        epilog="example: rama circuits heads smollm2-135m --out heads/",
    )
    add_options(heads, HeadsConfig)
    heads.set_defaults(handler=lambda ns: run_heads(from_args(HeadsConfig, ns)))


def run_heads(config: HeadsConfig) -> int:
    from rama import load
    from rama.atomic import write_text
    from rama.circuits.head_scores import head_table, save_head_heatmaps

    model = load(config.model)
    table = head_table(model, batch=config.batch, half=config.half, seed=config.seed)
    numbers = table.to_json()
    if config.out:
        for path in save_head_heatmaps(table, config.out):
            print(f"wrote {path}")
        write_text(Path(config.out) / "head_scores.json", json.dumps(numbers) + "\n")
    if config.json:
        print(json.dumps(numbers))
        return 0
    for name in table.scores:
        top = ", ".join(f"{layer}.{head} {score:.3f}" for layer, head, score in table.top(name, config.top))
        print(f"{name:16s} (layer.head score): {top}")
    return 0
