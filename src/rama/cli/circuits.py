"""`rama circuits ...`: head scores, lenses and circuit discovery (filled in by the circuits work)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `circuits` command group to `rama`."""
    group = subparsers.add_parser("circuits", help="head roles, lenses and circuits")
    group.add_subparsers(dest="circuits_command", metavar="COMMAND")
