"""`rama circuits ioi MODEL`: the IOI task on a real model and its circuit found by path patching."""

from __future__ import annotations

import argparse


def register_ioi(commands: argparse._SubParsersAction) -> None:
    """Placeholder until the IOI command lands."""
