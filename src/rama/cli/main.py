"""The `rama` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rama import __version__
from rama.cli import demo, inspect, sae, steer, toys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rama",
        description="Mechanistic interpretability on any Hugging Face transformer, offline.",
        epilog="example: rama demo   |   rama sites smollm2-135m   |   rama run smollm2-135m 'Hello'",
    )
    parser.add_argument("--version", action="version", version=f"rama {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    inspect.register(subparsers)
    demo.register(subparsers)
    sae.register(subparsers)
    toys.register(subparsers)
    steer.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["steer"]:
        # argparse cannot hand a subcommand's leading options on whole; steer parses its own (--help too)
        handler = lambda _: steer.dispatch(words[1:])  # noqa: E731
        args = argparse.Namespace(handler=handler)
    else:
        args = parser.parse_args(words)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args))
    except (ValueError, KeyError, IndexError, OSError, TypeError, ArithmeticError) as error:
        print(f"rama: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
