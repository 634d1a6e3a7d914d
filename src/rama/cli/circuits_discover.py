"""`rama circuits discover MODEL --task TASK --method eap|eap-ig|acdc` and `rama circuits render GRAPH`."""

from __future__ import annotations

import argparse


def register_discover(commands: argparse._SubParsersAction) -> None:
    """Placeholder until the discovery command lands."""


def register_render(commands: argparse._SubParsersAction) -> None:
    """Placeholder until the render command lands."""
