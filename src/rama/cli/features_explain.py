"""`rama features explain`: one-line explanations of a store's latents from an OpenAI-compatible endpoint.

The options are `rama.features.explain.ExplainConfig`'s fields (same names, defaults and help); `--ids`
takes latent numbers separated by spaces.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from rama.cli.options import add_options, from_args, option


@dataclass(frozen=True)
class FeatureExplainOptions:
    """What `rama features explain` needs besides its ExplainConfig."""

    db: str = option("", "the feature store (from `rama features build`)", positional=True)


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `explain` subcommand to `rama features`."""
    from rama.features.explain import ExplainConfig

    parser = commands.add_parser(
        "explain",
        help="explain each latent in a few words with a chat model behind an OpenAI-compatible API",
        epilog="example: OPENAI_API_KEY=... rama features explain l9.db --endpoint https://api.openai.com/v1 "
        "--model gpt-4o-mini --limit 100 --price-prompt 0.15 --price-completion 0.6",
    )
    add_options(parser, FeatureExplainOptions)
    settings = parser.add_argument_group("explanations (ExplainConfig)")
    add_options(settings, ExplainConfig, skip=("ids",))
    settings.add_argument("--ids", nargs="+", type=int, default=None, metavar="ID",
                          help="explain only these latents (default: all)")  # fmt: skip
    parser.set_defaults(handler=run_explain)


def run_explain(namespace: argparse.Namespace) -> int:
    from rama.features.explain import ExplainConfig, explain

    options = from_args(FeatureExplainOptions, namespace)
    config = from_args(ExplainConfig, namespace)
    report = explain(options.db, config)
    usage = report.usage
    cost = "" if report.cost is None else f", cost {report.cost:.4f}"
    print(f"explained {len(report.explained)} latents as {report.source!r} ({report.already_explained} explained "
          f"before, {report.never_fired} never fired); {usage.requests} requests ({usage.retries} retries), "
          f"{usage.prompt_tokens:,} prompt + {usage.completion_tokens:,} completion tokens{cost}")  # fmt: skip
    return 0
