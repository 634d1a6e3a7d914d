"""`rama monitor`: generate with probes and SAE latents watching every token (filled in by the monitor work)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `monitor` command to `rama`."""
    subparsers.add_parser("monitor", help="generate while probes and SAE latents watch every token")
