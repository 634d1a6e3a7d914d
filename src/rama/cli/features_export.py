"""`rama features export`: a feature store as Neuronpedia's JSON rows or as a self-contained static site."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from rama.cli.options import add_options, from_args, option

FORMATS = ("neuronpedia", "html")


@dataclass(frozen=True)
class FeatureExportOptions:
    """What `rama features export` writes, and where."""

    db: str = option("", "the feature store (from `rama features build`)", positional=True)
    format: str = option("neuronpedia", f"what to write: {' or '.join(FORMATS)}")
    out: str = option("", "a new (or empty) folder to write into (required)")
    progress: bool = option(True, "show a progress bar")


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `export` subcommand to `rama features`."""
    from rama.features.neuronpedia_export import NeuronpediaConfig

    parser = commands.add_parser(
        "export",
        help="write a feature store out for sharing: Neuronpedia's rows, or a static site (works from file://)",
        epilog="examples: rama features export l9.db --format neuronpedia --out l9-neuronpedia   |   "
        "rama features export l9.db --format html --out l9-site",
    )
    add_options(parser, FeatureExportOptions)
    add_options(
        parser.add_argument_group("neuronpedia (NeuronpediaConfig)"), NeuronpediaConfig, skip=("progress",)
    )
    parser.set_defaults(handler=run_export)


def run_export(namespace: argparse.Namespace) -> int:
    from rama.errors import ConfigError
    from rama.features.neuronpedia_export import NeuronpediaConfig, export_neuronpedia

    options = from_args(FeatureExportOptions, namespace)
    if options.format not in FORMATS:
        raise ConfigError(f"--format must be {' or '.join(FORMATS)}, not {options.format!r}")
    if not options.out:
        raise ConfigError("--out must name the folder to write, such as --out l9-neuronpedia")
    if options.format == "html":
        from rama.web.static_site import write_static_site

        site = write_static_site(options.db, options.out, progress=options.progress)
        print(f"wrote a static site to {site}/ (open {site / 'index.html'}; no server needed)")
        return 0
    out = export_neuronpedia(options.db, options.out, from_args(NeuronpediaConfig, namespace))
    print(f"wrote Neuronpedia rows to {out}/ (features/, activations/, explanations/, source.json)")
    return 0
