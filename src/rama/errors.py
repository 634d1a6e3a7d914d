"""rama's user-facing errors share one base class, so the CLI can print them as one line.

A `RamaError` means the user asked for something rama cannot do (a bad setting, a missing file,
a folder already in use) and its message says what would be right. Anything else that escapes is
a bug: the CLI prints its traceback and asks for a report.
"""

from __future__ import annotations


class RamaError(Exception):
    """Base class of every error whose message is meant for the user, not for a debugger."""


class ConfigError(RamaError, ValueError):
    """A setting is out of range or inconsistent; the message names it and what it may be."""


class InputError(RamaError, ValueError):
    """An input (prompt, token ids, tensor, file contents) cannot be used as given."""


class OutputError(RamaError, FileExistsError):
    """An output folder or file cannot be written as asked (exists, locked, not writable)."""
