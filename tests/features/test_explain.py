"""Automatic explanations against a real chat-completions server on 127.0.0.1: the request's shape, the
prompt, retries with backoff and Retry-After, malformed replies, timeouts, resumability and the token and
cost accounting. What the explanations say is not judged here."""

from __future__ import annotations

import email.utils
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from explain_helpers import COMPLETION_TOKENS, PROMPT_TOKENS, ChatServer, Scripted, serve_with_key, tiny_store
from net_helpers import free_port
from rama.errors import ConfigError, InputError
from rama.features import FeatureStore
from rama.features.explain import (
    SYSTEM_PROMPT,
    ExplainConfig,
    ExplainError,
    explain,
    mark_activating,
    retry_after_seconds,
)

KEY_ENV = "RAMA_TEST_EXPLAIN_KEY"
SOURCE = "openai:tiny-explainer"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_store(tmp_path_factory.mktemp("explain") / "f.db")


@pytest.fixture
def store(template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(template, tmp_path / "f.db"))


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatServer]:
    yield from serve_with_key(monkeypatch, KEY_ENV, "sk-test-123")


def config(server: ChatServer, **changes: Any) -> ExplainConfig:
    settings: dict[str, Any] = {"endpoint": server.url + "/v1", "model": "tiny-explainer", "key_env": KEY_ENV,
                                "workers": 1, "backoff": 0.01, "progress": False, **changes}  # fmt: skip
    return ExplainConfig(**settings)


def test_marks_each_run_of_active_tokens() -> None:
    assert mark_activating([" a", " b", " c", " d", " e"], [0.0, 1.5, 2.0, 0.0, 0.3]) == "a <<b c>> d <<e>>"
    assert mark_activating(["x\ny", " z", "\n"], [0.2, 0.0, 0.0]) == "<<x\\ny>> z\\n"


def test_the_docs_show_the_system_prompt_verbatim() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "features.md").read_text(encoding="utf-8")
    quoted = " ".join(line[2:] for line in page.splitlines() if line.startswith("> "))
    assert SYSTEM_PROMPT in quoted


def test_request_shape_prompt_and_saved_explanations(server: ChatServer, store: Path) -> None:
    report = explain(store, config(server, ids=[4, 5, 3], top_examples=2, quantile_examples=1))
    assert report.explained == [3, 4] and report.never_fired == 1 and report.source == SOURCE  # 5 never fires
    assert [r.path for r in server.received] == ["/v1/chat/completions"] * 2
    first = server.received[0]
    assert first.headers["Authorization"] == "Bearer sk-test-123"
    assert first.headers["Content-Type"] == "application/json"
    assert first.body["model"] == "tiny-explainer" and first.body["max_tokens"] == 100
    assert first.body["temperature"] == 0.0
    system, user = first.body["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT} and user["role"] == "user"
    with FeatureStore(store) as db:
        unit, top = db.unit(3), db.examples(3)
        assert unit is not None
        strongest = top[:2]
        shown = {t["token_index"] for t in strongest}
        candidates = [
            e for e in db.examples(3, "quantile") if e["token_index"] not in shown and e["rank"] == 0
        ]
        weaker = max(candidates, key=lambda e: e["bin"])  # the strongest group's first sample
        promoted = ", ".join(f'"{t["token"]}"' for t in db.logits(3, "norm"))
        assert user["content"] == "\n".join([
            f"Feature 3 (active on {unit['density']:.3%} of tokens; strongest activation {unit['max']:.3g}).",
            "", "Excerpts where it is most active, strongest first:",
            *(f"{n}. {mark_activating(e['tokens'], e['activations'])}" for n, e in enumerate(strongest, 1)),
            "", "Excerpts where it is more weakly active:",
            f"1. {mark_activating(weaker['tokens'], weaker['activations'])}",
            "", f"Tokens it makes more likely: {promoted}",
        ])  # fmt: skip
        assert (
            "<<" in user["content"] and f"<<{top[0]['tokens'][top[0]['focus']].lstrip()}" in user["content"]
        )
        saved = db.explanations(4)
    assert [(e["source"], e["text"]) for e in saved] == [(SOURCE, "feature 4 explained")]  # stripped
    assert datetime.fromisoformat(saved[0]["created"]).tzinfo is not None


def test_retries_429_and_5xx_with_exponential_backoff(server: ChatServer, store: Path) -> None:
    server.then(Scripted(429, headers={"Retry-After": "0"}), Scripted(500), Scripted(503))
    report = explain(store, config(server, ids=[3], backoff=0.2))
    assert report.explained == [3] and report.usage.requests == 4 and report.usage.retries == 3
    gaps = [b.at - a.at for a, b in zip(server.received, server.received[1:], strict=False)]
    assert gaps[0] < 0.2  # Retry-After: 0 wins over the backoff
    assert gaps[1] >= 0.4 and gaps[2] >= 0.8  # backoff × 2^attempt
    with FeatureStore(store) as db:
        assert db.explanations(3)[0]["text"] == "feature 3 explained"


def test_retry_after_is_honoured_up_to_max_wait(server: ChatServer, store: Path) -> None:
    server.then(Scripted(429, headers={"Retry-After": "1"}), Scripted(429, headers={"Retry-After": "30"}))
    explain(store, config(server, ids=[3], max_wait=1.5))
    gaps = [b.at - a.at for a, b in zip(server.received, server.received[1:], strict=False)]
    assert 1.0 <= gaps[0] < 5 and 1.5 <= gaps[1] < 5  # not the 30 s asked for
    in_30_s = email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds({"Retry-After": in_30_s}) == pytest.approx(30, abs=1.5)
    assert retry_after_seconds({"Retry-After": "soon"}) is None and retry_after_seconds({}) is None


def test_gives_up_with_a_clear_error_after_the_last_retry(server: ChatServer, store: Path) -> None:
    server.then(*[Scripted(502, body=b"bad gateway")] * 3)
    with pytest.raises(
        ExplainError, match=r"gave up on .*/v1/chat/completions after 3 attempts; the last: HTTP 502"
    ):
        explain(store, config(server, ids=[3], retries=2))
    assert len(server.received) == 3
    with FeatureStore(store) as db:
        assert db.explained(SOURCE) == set()


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"<html>oops</html>", "not JSON"), (b'{"id": "x", "object": "chat.completion"}', "no choices"),
     (b'{"choices": [{"message": {"content": ""}}]}', "empty")],
)  # fmt: skip
def test_malformed_replies_are_retried_then_a_clear_error(
    server: ChatServer, store: Path, body: bytes, reason: str
) -> None:
    server.then(*[Scripted(body=body)] * 2)
    with pytest.raises(ExplainError, match=f"after 2 attempts; the last: a malformed reply \\({reason}"):
        explain(store, config(server, ids=[3], retries=1))
    server.then(Scripted(body=body))  # one malformed reply, then a good one
    assert explain(store, config(server, ids=[3], retries=1)).explained == [3]


def test_a_refused_request_is_not_retried(server: ChatServer, store: Path) -> None:
    server.then(Scripted(401, body=b'{"error": {"message": "Incorrect API key provided"}}'))
    with pytest.raises(
        ExplainError, match=f"HTTP 401 .*Incorrect API key provided.*check the key in \\${KEY_ENV}"
    ):
        explain(store, config(server, ids=[3]))
    assert len(server.received) == 1


def test_a_slow_reply_times_out_and_is_retried(server: ChatServer, store: Path) -> None:
    server.then(Scripted(delay=1.5))
    report = explain(store, config(server, ids=[3], timeout=0.3, backoff=0.0))
    assert report.explained == [3] and report.usage.requests == 2
    assert server.received[1].at - server.received[0].at < 1.4  # did not wait for the slow reply
    server.then(Scripted(delay=1.0))
    with pytest.raises(ExplainError, match=r"after 1 attempts; the last: .*timed out"):
        explain(store, config(server, ids=[4], timeout=0.3, retries=0))


def test_connection_refused_is_retried_then_reported(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()  # closed again: nothing listens there
    settings = ExplainConfig(endpoint=f"http://127.0.0.1:{port}/v1", model="m", key_env="", retries=1,
                             backoff=0.0, progress=False, ids=[3])  # fmt: skip
    with pytest.raises(ExplainError, match="after 2 attempts; the last: ConnectionRefusedError"):
        explain(store, settings)


def test_reruns_skip_explained_latents_and_an_interrupted_run_resumes(
    server: ChatServer, store: Path
) -> None:
    with FeatureStore(store) as db:
        fired = [i for i in range(24) if db.unit(i)["count"] > 0]  # type: ignore[index]
    assert 0 not in fired and len(fired) >= 6
    server.then(Scripted(), Scripted(), Scripted(401))  # two answers, then the run stops
    with pytest.raises(
        ExplainError, match=r"HTTP 401 .*\(2 explanations saved in this run; the same command"
    ):
        explain(store, config(server))
    with FeatureStore(store) as db:
        assert db.explained(SOURCE) == set(fired[:2])
    server.received.clear()
    report = explain(store, config(server, workers=3))
    assert sorted(report.explained) == fired[2:] and report.already_explained == 2
    assert report.never_fired == 24 - len(fired)
    assert sorted(int(r.body["messages"][1]["content"].split()[1]) for r in server.received) == fired[2:]
    server.received.clear()
    again = explain(store, config(server))
    assert again.explained == [] and server.received == [] and again.already_explained == len(fired)
    with FeatureStore(store) as db:
        assert db.explained(SOURCE) == set(fired)
        assert all(db.explanations(i)[0]["text"] == f"feature {i} explained" for i in fired)
    other = explain(store, config(server, source="openai:second-opinion", limit=2))
    assert other.explained == fired[:2]  # another source starts afresh; --limit caps the run


def test_tokens_and_cost_from_usage_in_the_progress_bar(
    server: ChatServer, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.then(Scripted(500))  # a retried request costs nothing: its reply has no usage
    report = explain(
        store, config(server, ids=[3, 4, 8], progress=True, price_prompt=2.0, price_completion=10.0)
    )
    tokens = 3 * (PROMPT_TOKENS + COMPLETION_TOKENS)
    assert (report.usage.prompt_tokens, report.usage.completion_tokens) == (
        3 * PROMPT_TOKENS,
        3 * COMPLETION_TOKENS,
    )
    assert report.usage.requests == 4 and report.usage.retries == 1
    assert report.cost == pytest.approx((360 * 2.0 + 24 * 10.0) / 1e6)
    bar = capsys.readouterr().err
    assert f"tokens={tokens}" in bar and "retries=1" in bar and "cost=0.0010" in bar and "3/3" in bar


def test_bad_settings_and_ids_are_clear_errors(
    server: ChatServer, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="--endpoint must be an http"):
        ExplainConfig(endpoint="api.openai.com/v1", model="m")
    with pytest.raises(ConfigError, match="--model must name"):
        ExplainConfig(endpoint=server.url)
    with pytest.raises(ConfigError, match="--workers must be above 0"):
        config(server, workers=0)
    with pytest.raises(InputError, match=r"no latent 24 .* ids run from 0 to 23"):
        explain(store, config(server, ids=[3, 24]))
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ConfigError, match=f"\\${KEY_ENV} is not set"):
        explain(store, config(server, ids=[3]))
    assert server.received == []
    report = explain(store, config(server, ids=[3], key_env=""))  # a local server without a key
    assert report.explained == [3] and "Authorization" not in server.received[0].headers
