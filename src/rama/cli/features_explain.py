"""`rama features explain` (being written; registers nothing yet)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `explain` subcommand to `rama features`."""
