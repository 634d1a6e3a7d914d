"""Automatic explanations of latents from any OpenAI-compatible chat-completions endpoint.

Optional and online: `explain` shows a language model each latent's top activating examples (the
tokens where it fires marked `<<like this>>`) and the tokens it promotes, and saves the one-line answer
in the feature store under the source `openai:MODEL`. Each explanation is saved as it arrives and a
rerun skips the latents that source has already explained, so an interrupted run resumes where it
stopped. Transient failures (429, 5xx, timeouts, dropped connections, malformed replies) are retried
with exponential backoff, honouring `Retry-After`; the progress bar counts tokens and, given prices,
the cost. Only the standard library talks HTTP, so the library needs no extra dependency.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rama.errors import ConfigError, InputError, RamaError
from rama.features.analysis import setting
from rama.features.store import FeatureStore

SYSTEM_PROMPT = (
    "You explain what a feature of a language model responds to. A feature is a direction in the "
    "model's internal activations that is active on some tokens and not on others. You will see "
    "excerpts of text where the feature is active, with the tokens where it is active marked "
    "<<like this>>, and the tokens the feature makes the model more likely to predict next. Find "
    "what the marked tokens have in common, using the surrounding text and the predicted tokens. "
    "Answer with one short phrase of at most 12 words: no preamble, no quotes, no full stop."
)
RETRY_STATUSES = frozenset({408, 409, 429})  # and every 5xx


class ExplainError(RamaError):
    """The explanation endpoint refused a request or kept failing after every retry."""


@dataclass(frozen=True)
class ExplainConfig:
    """What `explain` asks, of which endpoint, and how patiently (the options of `rama features explain`)."""

    endpoint: str = setting(
        "", "base URL of an OpenAI-compatible API, e.g. https://api.openai.com/v1 (required)"
    )
    model: str = setting("", "the chat model to ask (required)")
    key_env: str = setting("OPENAI_API_KEY", "environment variable holding the API key, sent as a Bearer "
                                             "token; '' sends none")  # fmt: skip
    source: str = setting("", "name the explanations are saved under (default: openai:MODEL)")
    ids: list[int] = field(
        default_factory=list, metadata={"help": "explain only these latents (default: all)"}
    )
    limit: int | None = setting(None, "explain at most this many latents in this run")
    top_examples: int = setting(10, "top activating excerpts in each prompt")
    quantile_examples: int = setting(5, "weaker excerpts, from the quantile samples, in each prompt")
    logit_tokens: int = setting(10, "promoted tokens in each prompt")
    max_tokens: int = setting(100, "longest reply in tokens, sent as max_tokens (0: not sent)")
    temperature: float | None = setting(0.0, "sampling temperature")
    timeout: float = setting(60.0, "seconds to wait on a request's socket before retrying")
    retries: int = setting(6, "retries of a failed request before giving up")
    backoff: float = setting(1.0, "seconds before the first retry, doubled for each further one")
    max_wait: float = setting(60.0, "longest wait before a retry, the server's Retry-After included")
    workers: int = setting(4, "requests in flight at once")
    price_prompt: float | None = setting(None, "price per million prompt tokens (shows the cost)")
    price_completion: float | None = setting(None, "price per million completion tokens")
    progress: bool = setting(True, "show a progress bar")

    def __post_init__(self) -> None:
        if not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"--endpoint must be an http(s) URL such as https://api.openai.com/v1, "
                              f"not {self.endpoint!r}")  # fmt: skip
        if not self.model:
            raise ConfigError("--model must name the chat model to ask, such as gpt-4o-mini")
        positive = {"timeout": self.timeout, "workers": self.workers}
        not_negative = {"retries": self.retries, "backoff": self.backoff, "max_wait": self.max_wait,
                        "top_examples": self.top_examples, "quantile_examples": self.quantile_examples,
                        "logit_tokens": self.logit_tokens, "limit": self.limit or 0}  # fmt: skip
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be above 0, not {value}")
        for name, value in not_negative.items():
            if value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more, not {value}")

    @property
    def source_name(self) -> str:
        return self.source or f"openai:{self.model}"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """The cost of these tokens at the configured prices (None when no price is given)."""
        if self.price_prompt is None and self.price_completion is None:
            return None
        return (
            prompt_tokens * (self.price_prompt or 0.0) + completion_tokens * (self.price_completion or 0.0)
        ) / 1e6


@dataclass
class Usage:
    """Requests and tokens spent, summed from the replies' `usage` (a reply without one counts 0 tokens)."""

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.requests += other.requests
        self.retries += other.retries
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ExplainReport:
    """What one run did: the latents it explained, those it skipped and what it spent."""

    source: str
    explained: list[int]
    already_explained: int
    never_fired: int
    usage: Usage
    cost: float | None


def mark_activating(tokens: list[str], activations: list[float]) -> str:
    """One excerpt as text, each run of tokens where the unit is active wrapped in `<<` `>>` (a leading
    space stays outside: `the <<cat>>`); newlines shown as `\\n` so each excerpt stays on one line."""
    parts: list[str] = []
    active = False
    for token, value in zip(tokens, activations, strict=True):
        text = token.replace("\n", "\\n")
        if value > 0 and not active:
            word = text.lstrip(" ")
            text = text[: len(text) - len(word)] + "<<" + word
        elif active and value <= 0:
            parts.append(">>")
        active = value > 0
        parts.append(text)
    return ("".join(parts) + (">>" if active else "")).strip()


def pick_quantile_examples(quantile: list[dict[str, Any]], n: int, skip: set[int]) -> list[dict[str, Any]]:
    """`n` quantile samples, one per group from the strongest group down, then a second round, …"""
    fresh = [e for e in quantile if e["token_index"] not in skip]
    return sorted(fresh, key=lambda e: (e["rank"], -e["bin"]))[:n]


def explanation_prompt(store: FeatureStore, id: int, config: ExplainConfig) -> list[dict[str, str]]:
    """The chat messages that ask for latent `id`'s explanation (shown in full in docs/features.md)."""
    unit = store.unit(id)
    if unit is None:
        raise InputError(f"no latent {id} in {str(store.path)!r} (it holds {store.count()} latents)")
    top = store.examples(id, "top")[: config.top_examples]
    weaker = pick_quantile_examples(
        store.examples(id, "quantile"), config.quantile_examples, {e["token_index"] for e in top}
    )
    lines = [f"Feature {id} (active on {unit['density']:.3%} of tokens; strongest activation {unit['max']:.3g}).",
             "", "Excerpts where it is most active, strongest first:"]  # fmt: skip
    lines += [f"{n}. {mark_activating(e['tokens'], e['activations'])}" for n, e in enumerate(top, 1)]
    if weaker:
        lines += ["", "Excerpts where it is more weakly active:"]
        lines += [f"{n}. {mark_activating(e['tokens'], e['activations'])}" for n, e in enumerate(weaker, 1)]
    promoted = store.logits(id, "norm", "promoted")[: config.logit_tokens]
    if promoted:
        tokens = ", ".join(json.dumps(t["token"], ensure_ascii=False) for t in promoted)
        lines += ["", f"Tokens it makes more likely: {tokens}"]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


class ChatClient:
    """POSTs chat-completions requests to one endpoint, retrying transient failures with backoff."""

    def __init__(self, config: ExplainConfig, key: str | None) -> None:
        self.config = config
        self.url = config.endpoint.rstrip("/") + "/chat/completions"
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.stopped = threading.Event()  # set when the run ends early: no more attempts, no waiting

    def complete(self, messages: list[dict[str, str]]) -> tuple[str, Usage]:
        """The reply's text and what it cost; an ExplainError once every retry has failed."""
        body: dict[str, Any] = {"model": self.config.model, "messages": messages}
        if self.config.max_tokens:
            body["max_tokens"] = self.config.max_tokens
        if self.config.temperature is not None:
            body["temperature"] = self.config.temperature
        data = json.dumps(body).encode()
        usage = Usage()
        for attempt in range(self.config.retries + 1):
            if self.stopped.is_set():
                raise ExplainError("stopped: the run ended before this request was answered")
            usage.requests += 1
            usage.retries = attempt
            try:
                reply = self.post(data)
                text, tokens = parse_reply(reply)
            except TransientError as error:
                if attempt == self.config.retries:
                    raise ExplainError(
                        f"gave up on {self.url} after {attempt + 1} attempts; the last: {error}"
                    ) from None
                self.stopped.wait(self.wait(attempt, error.retry_after))
                continue
            usage.prompt_tokens, usage.completion_tokens = tokens
            return text, usage
        raise AssertionError("unreachable: the last attempt returns or raises")

    def wait(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry `attempt + 1`: the server's Retry-After if it sent one, else
        `backoff × 2^attempt`; never more than `max_wait`."""
        wanted = retry_after if retry_after is not None else self.config.backoff * 2**attempt
        return max(0.0, min(wanted, self.config.max_wait))

    def post(self, data: bytes) -> bytes:
        """One request's reply body; TransientError for what a retry may fix, ExplainError otherwise."""
        request = urllib.request.Request(self.url, data=data, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as error:
            detail = error_detail(error)
            if error.code in RETRY_STATUSES or error.code >= 500:
                raise TransientError(
                    f"HTTP {error.code} {detail}", retry_after_seconds(error.headers)
                ) from None
            hint = f"; check the key in ${self.config.key_env}" if error.code in (401, 403) else ""
            raise ExplainError(f"{self.url} refused the request: HTTP {error.code} {detail}{hint}") from None
        except (OSError, http.client.HTTPException) as error:  # timeouts, refused or dropped connections
            reason = getattr(error, "reason", None) or error
            raise TransientError(f"{type(reason).__name__}: {reason}") from None


class TransientError(Exception):
    """A failed request that a retry may fix, with the server's Retry-After (seconds) if it sent one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def error_detail(error: urllib.error.HTTPError) -> str:
    """The reason and the start of the body of an HTTP error reply (OpenAI puts its message there)."""
    try:
        body = error.read(500).decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException):
        body = ""
    return f"{error.reason}: {body}" if body else str(error.reason)


def retry_after_seconds(headers: Any) -> float | None:
    """A `Retry-After` header as seconds: a number of seconds or an HTTP date (None if absent or unreadable)."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return (when - datetime.now(timezone.utc)).total_seconds()


def parse_reply(body: bytes) -> tuple[str, tuple[int, int]]:
    """The first choice's text and the (prompt, completion) token counts; TransientError when the
    reply is not a chat completion (a retry may get a whole one; after the last, a clear error)."""
    try:
        reply = json.loads(body)
    except ValueError:
        raise TransientError(f"a malformed reply (not JSON): {body[:200]!r}") from None
    try:
        text = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise TransientError(f"a malformed reply (no choices[0].message.content): {body[:200]!r}") from None
    if not isinstance(text, str) or not text.strip():
        raise TransientError(f"a malformed reply (empty or non-text content): {body[:200]!r}")
    usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
    counts = (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
    return text.strip().strip("\"'").strip(), counts


def api_key(config: ExplainConfig) -> str | None:
    """The key from the environment variable `config.key_env` ('' asks for no key)."""
    if not config.key_env:
        return None
    key = os.environ.get(config.key_env)
    if not key:
        raise ConfigError(f"the API key variable ${config.key_env} is not set; set it, name another with "
                          "--key-env, or pass --key-env '' for an endpoint without a key")  # fmt: skip
    return key


def pending_latents(store: FeatureStore, config: ExplainConfig) -> tuple[list[int], int, int]:
    """The latents this run explains (in id order, at most `limit`), how many the source has already
    explained and how many never fired (nothing to show, so never asked about)."""
    d_sae = int(store.meta["d_sae"])
    wanted = sorted(set(config.ids)) if config.ids else list(range(d_sae))
    unknown = [i for i in wanted if not 0 <= i < d_sae]
    if unknown:
        raise InputError(f"no latent {unknown[0]} in {str(store.path)!r}: ids run from 0 to {d_sae - 1}")
    done = store.explained(config.source_name)
    fired = [i for i in wanted if i not in done and (store.unit(i) or {}).get("count", 0) > 0]
    todo = [i for i in wanted if i not in done]
    pending = fired[: config.limit] if config.limit is not None else fired
    return pending, len(wanted) - len(todo), len(todo) - len(fired)


def answers(
    client: ChatClient, prompts: dict[int, list[dict[str, str]]], workers: int
) -> Iterator[tuple[int, str, Usage]]:
    """(latent, explanation, usage) as each answer arrives, from `workers` daemon threads (a Ctrl-C
    or an error ends the run at once, without waiting on requests in flight); the first failure raises."""
    jobs: queue.SimpleQueue[int] = queue.SimpleQueue()
    for id in prompts:
        jobs.put(id)
    results: queue.SimpleQueue[tuple[int, tuple[str, Usage] | None, BaseException | None]] = (
        queue.SimpleQueue()
    )

    def work() -> None:
        while not client.stopped.is_set():
            try:
                id = jobs.get_nowait()
            except queue.Empty:
                return
            try:
                results.put((id, client.complete(prompts[id]), None))
            except BaseException as error:  # handed to the main thread, which raises it
                results.put((id, None, error))
                return

    for _ in range(min(workers, len(prompts))):
        threading.Thread(target=work, daemon=True, name="rama-explain").start()
    for _ in prompts:
        id, answer, error = results.get()
        if error is not None:
            raise error
        assert answer is not None
        yield id, *answer


def explain(store_path: str | Path, config: ExplainConfig) -> ExplainReport:
    """Ask `config.endpoint` to explain each pending latent of the store and save each answer as it
    arrives (source `config.source_name`); a rerun skips what that source has already explained."""
    client = ChatClient(config, api_key(config))
    usage, explained = Usage(), []
    with FeatureStore(store_path, writable=True) as store:
        pending, already, dead = pending_latents(store, config)
        prompts = {i: explanation_prompt(store, i, config) for i in pending}
        bar = tqdm(total=len(pending), desc="explanations", unit="latent", disable=not config.progress)
        try:
            for id, text, spent in answers(client, prompts, config.workers):
                created = datetime.now(timezone.utc).isoformat(timespec="seconds")
                store.set_explanation(id, config.source_name, text, created)
                explained.append(id)
                usage.add(spent)
                bar.set_postfix_str(progress_note(usage, config), refresh=False)
                bar.update()
        except ExplainError as error:
            raise ExplainError(f"{error} ({len(explained)} explanations saved in this run; the same command "
                               "carries on with the rest)") from None  # fmt: skip
        finally:
            client.stopped.set()
            bar.close()
    cost = config.cost(usage.prompt_tokens, usage.completion_tokens)
    return ExplainReport(config.source_name, explained, already, dead, usage, cost)


def progress_note(usage: Usage, config: ExplainConfig) -> str:
    """The progress bar's tokens (and cost, given prices) so far."""
    note = f"tokens={usage.tokens:,}"
    if usage.retries:
        note += f" retries={usage.retries}"
    cost = config.cost(usage.prompt_tokens, usage.completion_tokens)
    return note if cost is None else f"{note} cost={cost:.4f}"
