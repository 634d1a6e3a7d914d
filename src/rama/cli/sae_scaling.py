"""`rama sae scaling`: a grid of TopK SAEs from one activation cache, Gao et al.'s scaling laws
fitted to it, a figure, and the cheapest (width, k, tokens) predicted to reach a target FVU."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rama.cli.options import add_options, from_args
from rama.sae.scaling import ScalingConfig

HELP = "train a grid of SAEs over widths, k and token budgets; fit scaling laws; recommend a size"
EXAMPLE = (
    "example: rama sae scaling --widths 1152,2304,4608 --ks 16,32,64 --tokens 400000 "
    "--target-fvu 0.15 --out scaling-l9"
)


def register_scaling(commands: argparse._SubParsersAction) -> None:
    """Add `scaling` to the `rama sae` subcommands."""
    parser = commands.add_parser("scaling", help=HELP, epilog=EXAMPLE)
    add_options(parser, ScalingConfig)
    parser.set_defaults(handler=handle)


def handle(namespace: argparse.Namespace) -> int:
    return run_scaling(from_args(ScalingConfig, namespace))


def run_scaling(config: ScalingConfig) -> int:
    from rama import load
    from rama.sae.scaling import fit_scaling_laws, plot_scaling, run_grid, scaling_report

    model = load(config.model, device=config.device)
    try:
        records = run_grid(model, config)
    except KeyboardInterrupt:
        print("interrupted; finished points are kept: rerun the same command to resume", file=sys.stderr)
        return 130
    fits = fit_scaling_laws(records)
    report = scaling_report(fits, records, config.target_fvu)
    figure = plot_scaling(records, fits, config.figure or Path(config.out) / "scaling.png")
    print(json.dumps(report, indent=2))
    print(f"wrote {figure} and {Path(config.out) / 'results.jsonl'}")
    if "unreachable" in report.get("recommendation", {}):
        print(f"no recommendation: {report['recommendation']['unreachable']}", file=sys.stderr)
    return 0
