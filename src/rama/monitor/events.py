"""Monitor events: one per flagged token and watcher, written as JSON lines to a file, to stdout, or
handed to a callback.

An event's fields: `position` (the token's index in the whole sequence, prompt included), `generated`
(its index among the generated tokens; null for a prompt token), `token` (its text), `text` (the text so
far, through this token), `watcher`, `kind` (`probe` or `latent`), `score` (the aggregated score that
crossed), `raw` (this token's own score), `threshold`, `aggregate` and `window`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

from rama.atomic import staged_file


@dataclass(frozen=True)
class MonitorEvent:
    """A watcher's aggregated score above its threshold at one token."""

    position: int
    generated: int | None
    token: str
    text: str
    watcher: str
    kind: str
    score: float
    raw: float
    threshold: float
    aggregate: str
    window: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


class EventSink(Protocol):
    def emit(self, event: MonitorEvent) -> None: ...


class CallbackSink:
    """Calls `callback(event)` for each event as it happens."""

    def __init__(self, callback: Callable[[MonitorEvent], Any]) -> None:
        self.callback = callback

    def emit(self, event: MonitorEvent) -> None:
        self.callback(event)


class StreamSink:
    """Writes each event as one JSON line to an open text stream (stdout), flushed at once."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def emit(self, event: MonitorEvent) -> None:
        self.stream.write(event.to_json() + "\n")
        self.stream.flush()


class JsonLinesFile:
    """A context manager: `-` streams to stdout; a path is written through a staging file that replaces
    the path in one rename when the block ends without error (a reader never sees half a log)."""

    def __init__(self, target: str | os.PathLike[str]) -> None:
        self.target = str(target)
        self.stack = ExitStack()

    def __enter__(self) -> StreamSink:
        if self.target == "-":
            return StreamSink(sys.stdout)
        staging: Path = self.stack.enter_context(staged_file(self.target))
        return StreamSink(self.stack.enter_context(staging.open("w", encoding="utf-8")))

    def __exit__(self, *exc: object) -> None:
        self.stack.__exit__(*exc)  # type: ignore[arg-type]


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The events of a JSON-lines file, as dicts."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
