"""The `rama` command.

Errors: a `RamaError` is a user's mistake (a bad setting, a missing file) and prints as one line;
anything else is a bug in rama and prints its traceback with a request for a report, so no bug hides
behind a tidy message. `--debug` shows the traceback of a `RamaError` too. Ctrl-C ends with one line
and exit status 130, as a shell expects.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from rama import __version__
from rama.cli import (
    activations_ring,
    circuits,
    demo,
    features,
    inspect,
    monitor,
    probe,
    sae,
    serve,
    steer,
    toys,
)
from rama.errors import RamaError

BUG_REPORT = (
    "rama: this is a bug in rama, not a mistake in your command; please report it with the command "
    "and the traceback above"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rama",
        description="Mechanistic interpretability on any Hugging Face transformer, offline.",
        epilog="example: rama demo   |   rama sites smollm2-135m   |   rama run smollm2-135m 'Hello'",
    )
    parser.add_argument("--version", action="version", version=f"rama {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of rama's own error messages too"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    inspect.register(subparsers)
    demo.register(subparsers)
    sae.register(subparsers)
    activations_ring.register(subparsers)
    toys.register(subparsers)
    steer.register(subparsers)
    features.register(subparsers)
    serve.register(subparsers)
    probe.register(subparsers)
    monitor.register(subparsers)
    circuits.register(subparsers)
    finish_parsers(parser)
    return parser


def finish_parsers(parser: argparse.ArgumentParser) -> None:
    """For every command: a group called without its subcommand (`rama sae`) prints its own help, not
    the top level's; and option names must be typed whole (no `--mode` silently read as `--model`)."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if child.get_default("handler") is None:
                    child.set_defaults(handler=lambda _, child=child: print_help(child))
                finish_parsers(child)


def print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def parse(words: list[str]) -> argparse.Namespace:
    """The parsed command; `steer` parses its own words (argparse cannot hand a subcommand's leading
    options on whole, and `rama steer --help` must answer with steer's options)."""
    if words[:1] == ["steer"]:
        return argparse.Namespace(handler=lambda _: steer.dispatch(words[1:]))
    parser = build_parser()
    args = parser.parse_args(words)
    if getattr(args, "handler", None) is None:
        args.handler = lambda _: print_help(parser)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    end = words.index("--") if "--" in words else len(words)
    debug = "--debug" in words[:end]
    if debug:  # accepted anywhere before "--", so it can be added to the end of any command
        words = [w for i, w in enumerate(words) if not (w == "--debug" and i < end)]
    try:
        args = parse(words)
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("rama: interrupted", file=sys.stderr)
        return 130
    except RamaError as error:
        if debug:
            traceback.print_exc()
        print(f"rama: error: {error}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print(BUG_REPORT, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
