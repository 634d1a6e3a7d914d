"""`rama probe` (being written; registers nothing yet)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `probe` command group to `rama`."""
