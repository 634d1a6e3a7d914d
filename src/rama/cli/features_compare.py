"""`rama features compare` (being written; registers nothing yet)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `compare` subcommand to `rama features`."""
