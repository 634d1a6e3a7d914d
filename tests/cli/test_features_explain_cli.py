"""`rama features explain` against a real chat-completions server on 127.0.0.1: explanations saved, the
summary line's counts and cost, a rerun that asks nothing, and one-line errors for a missing key or URL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_helpers import rama_in_process
from explain_helpers import ChatServer, Scripted, serve_with_key, tiny_store
from rama.features import FeatureStore

KEY_ENV = "RAMA_TEST_EXPLAIN_CLI_KEY"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_store(tmp_path_factory.mktemp("explain-cli") / "f.db")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatServer]:
    yield from serve_with_key(monkeypatch, KEY_ENV, "sk-cli")


def explain_args(store: Path, server: ChatServer, *extra: str) -> list[str]:
    return ["features", "explain", str(store), "--endpoint", f"{server.url}/v1", "--model", "tiny-explainer",
            "--key-env", KEY_ENV, "--backoff", "0", "--no-progress", *extra]  # fmt: skip


def test_explain_saves_explanations_and_reports_what_it_spent(store: Path, server: ChatServer) -> None:
    server.then(Scripted(503))
    args = explain_args(
        store, server, "--ids", "4", "3", "5", "--price-prompt", "1", "--price-completion", "2"
    )
    result = rama_in_process(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "explained 2 latents as 'openai:tiny-explainer' (0 explained before, 1 never fired); 3 requests "
        "(1 retries), 240 prompt + 16 completion tokens, cost 0.0003"
    )  # cost: (240 × 1 + 16 × 2) / 1e6
    assert {r.headers["Authorization"] for r in server.received} == {"Bearer sk-cli"}
    with FeatureStore(store) as db:
        assert db.explanations(4)[0]["text"] == "feature 4 explained" and db.explanations(5) == []
    server.received.clear()
    again = rama_in_process(*explain_args(store, server, "--ids", "3", "4", "--limit", "1"))
    assert again.returncode == 0 and server.received == []
    assert again.stdout.startswith("explained 0 latents as 'openai:tiny-explainer' (2 explained before")


def test_explain_errors_are_one_line(
    store: Path, server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.then(Scripted(body=b"not json"), Scripted(body=b"not json"))
    malformed = rama_in_process(*explain_args(store, server, "--ids", "8", "--retries", "1"))
    assert malformed.returncode == 1 and "Traceback" not in malformed.stderr
    assert malformed.stderr.strip().startswith("rama: error: gave up on http://127.0.0.1:")
    assert (
        "a malformed reply (not JSON)" in malformed.stderr and len(malformed.stderr.strip().splitlines()) == 1
    )
    no_url = rama_in_process("features", "explain", str(store), "--model", "m")
    assert no_url.returncode == 1 and no_url.stderr.strip().splitlines() == [
        "rama: error: --endpoint must be an http(s) URL such as https://api.openai.com/v1, not ''"
    ]
    monkeypatch.delenv(KEY_ENV)
    no_key = rama_in_process(*explain_args(store, server))
    assert no_key.returncode == 1 and f"${KEY_ENV} is not set" in no_key.stderr
    assert len(server.received) == 2  # the two malformed replies; nothing asked without a key
