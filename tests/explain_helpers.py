"""A real HTTP server on 127.0.0.1 that speaks the chat-completions protocol, scripted per request, and
a tiny feature store to explain: what the explanation tests (library and CLI) run against."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from features.feature_helpers import tiny_model, tiny_sae, token_rows
from rama.features import BuildConfig, build

PROMPT_TOKENS, COMPLETION_TOKENS = 120, 8  # the `usage` of every successful reply


@dataclass
class Scripted:
    """One reply: an HTTP status, headers, a body (None: a proper completion) and a delay before it."""

    status: int = 200
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float


class ChatServer:
    """Answers POST …/chat/completions: the next scripted reply, or once the script is used up a
    completion naming the feature the prompt asks about ("feature N explained")."""

    def __init__(self) -> None:
        self.script: deque[Scripted] = deque()
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self.handler_class())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def then(self, *replies: Scripted) -> ChatServer:
        self.script.extend(replies)
        return self

    def next_reply(self, request: dict[str, Any]) -> Scripted:
        with self.lock:
            reply = self.script.popleft() if self.script else Scripted()
        if reply.status == 200 and reply.body is None:
            reply.body = json.dumps(self.completion(request)).encode()
        return reply

    def completion(self, request: dict[str, Any]) -> dict[str, Any]:
        asked = re.search(r"Feature (\d+) ", request["messages"][-1]["content"])
        message = {"role": "assistant", "content": f" feature {asked and asked[1]} explained\n"}
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS},
        }

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.received.append(Received(self.path, dict(self.headers), body, time.monotonic()))
                reply = server.next_reply(body)
                time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                        self.send_header(name, value)
                    payload = reply.body if reply.body is not None else b'{"error": {"message": "scripted"}}'
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (the timeout tests)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def serve_with_key(monkeypatch: Any, key_env: str, key: str) -> Iterator[ChatServer]:
    """A running ChatServer while the API key is in the environment (for a fixture to `yield from`)."""
    monkeypatch.setenv(key_env, key)
    server = ChatServer()
    try:
        yield server
    finally:
        server.close()


BUILD = BuildConfig(batch_size=6, top_k=4, context_left=3, context_right=1, quantiles=3, per_quantile=2,
                    logit_tokens=3, neighbours=3, neurons=False, progress=False)  # fmt: skip


def tiny_store(path: Path) -> Path:
    """A feature store for a 24-latent TopK SAE on a tiny Llama (latent 0 never fires); about a second."""
    return build(tiny_sae(), tiny_model(), tokens=token_rows(), out=path, config=BUILD)
