"""`rama features build`: a feature store (SQLite) for an SAE, from one streaming pass over a corpus.

The analysis options are `rama.features.BuildConfig`'s fields (same names, defaults and help).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from rama.cli import features_compare, features_explain, features_export, features_score
from rama.cli.options import add_options, from_args, option
from rama.features.analysis import BuildConfig


@dataclass(frozen=True)
class FeatureBuildOptions:
    """What `rama features build` needs besides its BuildConfig."""

    sae_dir: str = option("", "a saved SAE folder (rama, SAELens, sparsify, Gemma Scope …)", positional=True)
    corpus: str | None = option(None, "corpus file/folder (default: the built-in English corpus)")
    model: str | None = option(None, "model (default: the model named in the SAE's cfg)")
    out: str = option("features.db", "the feature store to write")
    replace: bool = option(False, "replace an existing store at --out")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "features", help="feature stores: what each SAE latent responds to and does"
    )
    commands = parser.add_subparsers(dest="features_command", metavar="FEATURES_COMMAND")
    build_parser = commands.add_parser(
        "build",
        help="analyse an SAE's latents (and the block's MLP neurons) over a corpus into a SQLite store",
        epilog="example: rama features build sae-l9 --tokens 1000000 --out l9.db",
    )
    add_options(build_parser, FeatureBuildOptions)
    settings = build_parser.add_argument_group("analysis (BuildConfig)")
    add_options(settings, BuildConfig)
    build_parser.set_defaults(handler=run_build)
    for module in (features_compare, features_score, features_explain, features_export):
        module.register(commands)


def run_build(namespace: argparse.Namespace) -> int:
    from rama.distributed import is_main
    from rama.features.builder import build
    from rama.features.store import FeatureStore

    options = from_args(FeatureBuildOptions, namespace)
    config = from_args(BuildConfig, namespace)
    out = build(options.sae_dir, options.model, corpus=options.corpus, out=options.out, config=config,
                replace=options.replace)  # fmt: skip
    if not is_main():  # under torchrun rank 0 merged every rank's part and wrote the store
        return 0
    with FeatureStore(out) as store:
        meta = store.meta
    neurons = f" and {meta['n_neurons']} neurons of {meta['neuron_site']}" if meta["n_neurons"] else ""
    print(f"wrote {out}: {meta['d_sae']} latents of {meta['site']}{neurons}, over {meta['tokens']} tokens")
    return 0
