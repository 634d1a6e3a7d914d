"""`rama probe capability`: capabilities as a property of the weights (filled in by the capability work)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    """Add `capability` to the `rama probe` group."""
    commands.add_parser(
        "capability", help="ablate the latents that carry a capability and measure all of them"
    )
