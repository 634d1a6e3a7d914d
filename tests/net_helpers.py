"""Ports for tests that start real servers and process groups."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the OS says is free now (port 0), so parallel test workers never collide."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
