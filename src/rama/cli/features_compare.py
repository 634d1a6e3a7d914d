"""`rama features compare`: features vs neurons of the same block, measured on a feature store: token
concentration and context coherence as two distributions, a table, a figure and JSON.

The measure options are `rama.features.monosemanticity.CompareConfig`'s fields (same names, defaults and
help); docs/features.md ("Features are not neurons") defines every number.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from rama.cli.options import add_options, from_args, option


@dataclass(frozen=True)
class FeatureCompareOptions:
    """What `rama features compare` needs besides its CompareConfig."""

    db: str = option("", "the feature store (from `rama features build`)", positional=True)
    out: str = option("features-compare", "folder for compare.json and compare.png")
    json: bool = option(False, "print the summary as JSON instead of the table")


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `compare` subcommand to `rama features`."""
    from rama.features.monosemanticity import CompareConfig

    parser = commands.add_parser(
        "compare",
        help="features vs neurons: token concentration and context coherence of every unit, side by side",
        epilog="example: rama features compare l9.db --out l9-compare",
    )
    add_options(parser, FeatureCompareOptions)
    add_options(parser.add_argument_group("measures (CompareConfig)"), CompareConfig)
    parser.set_defaults(handler=run_compare)


def run_compare(namespace: argparse.Namespace) -> int:
    from rama.atomic import write_text
    from rama.features.monosemanticity import CompareConfig, compare_units, comparison_table, plot_comparison
    from rama.features.store import FeatureStore

    options = from_args(FeatureCompareOptions, namespace)
    config = from_args(CompareConfig, namespace)
    with FeatureStore(options.db) as store:
        comparison = compare_units(store, config=config)
        record = {"store": str(options.db), "site": store.meta.get("site"),
                  "neuron_site": store.meta.get("neuron_site"), "tokens": store.meta.get("tokens"),
                  **comparison.to_json()}  # fmt: skip
    out = Path(options.out)
    written = [
        write_text(out / "compare.json", json.dumps(record, indent=1)),
        plot_comparison(comparison, out / "compare.png"),
    ]
    if options.json:  # stdout holds only the JSON
        print(json.dumps({key: record[key] for key in ("store", "baseline", "summary")}, indent=1))
    else:
        print(comparison_table(comparison))
    print("wrote " + " and ".join(map(str, written)), file=sys.stderr if options.json else sys.stdout)
    return 0
