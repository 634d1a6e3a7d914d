"""`Monitor`: probes and SAE latents scored at every token from the forward pass that computes it.

Hooks at each watched site score the activations of the forward's new positions (with a KV cache: the one
token just fed in) with every watcher there in one matmul; a hook on the model's root records the input
ids before the forward and, after it, aggregates each watcher's score over the last `window` tokens
(max or mean), compares it with the watcher's threshold and sends an event for every score above it.
There is no second forward pass: the scores come from the activations generation computes anyway.

Thread safety: a `Monitor` holds no per-call state (each `generate`, `forward` or `watch` has its own
`MonitorRun`), and the model's lock is held for a whole call, so concurrent calls from a server's
threads are serialised and each gets exactly the scores it would get alone. Running the same monitor
again from inside one of its own callbacks (the same thread) is refused with a `MonitorBusyError`.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from rama.errors import ConfigError, InputError, RamaError
from rama.hooks.core import HookPoint
from rama.hooks.model import HookedModel
from rama.monitor.events import CallbackSink, EventSink, MonitorEvent
from rama.monitor.watchers import LatentWatcher, SiteScorer, Watcher, check_watchers
from rama.sae.base import setting

AGGREGATES = ("max", "mean")


class MonitorBusyError(RamaError, RuntimeError):
    """A monitor started again from inside one of its own runs (a callback) on the same thread."""


@dataclass(frozen=True)
class MonitorConfig:
    """How scores become events; `rama monitor` takes these fields as options."""

    window: int = setting(1, "aggregate each watcher's score over the last WINDOW tokens")
    aggregate: str = setting("max", f"aggregation over the window: {' | '.join(AGGREGATES)}")
    flag_prompt: bool = setting(False, "raise events on prompt tokens too (default: generated tokens only)")

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or self.window < 1:
            raise ConfigError(f"window must be a whole number of tokens, at least 1, not {self.window!r}")
        if self.aggregate not in AGGREGATES:
            raise ConfigError(f"aggregate {self.aggregate!r} is not one of {', '.join(AGGREGATES)}")


def window_scores(scores: torch.Tensor, window: int, how: str, start: int = 0) -> torch.Tensor:
    """`[P - start, n]`: for each position p ≥ start of `scores` `[P, n]`, the max or mean of rows
    max(0, p − window + 1) … p (fewer than `window` rows at the beginning of the sequence)."""
    lo = max(0, start - window + 1)
    missing = window - 1 - (start - lo)  # rows the first window would reach before position 0
    fill = float("-inf") if how == "max" else 0.0
    padded = torch.cat([scores.new_full((missing, scores.shape[1]), fill), scores[lo:]])
    windows = padded.unfold(0, window, 1)  # [P - start, n, window]
    if how == "max":
        return windows.max(-1).values
    counts = (torch.arange(start, scores.shape[0], device=scores.device) + 1).clamp(max=window)
    return windows.sum(-1) / counts[:, None]


@dataclass(frozen=True)
class TokenScores:
    """One token as the monitor saw it; `raw`, `score` and `flagged` follow the watchers' order."""

    position: int
    generated: int | None
    token: str
    raw: list[float]
    score: list[float]
    flagged: list[bool]


@dataclass
class MonitorResult:
    """Everything one monitored call saw: ids `[P]`, raw and aggregated scores `[P, n_watchers]`."""

    watchers: list[str]
    thresholds: list[float]
    config: MonitorConfig
    ids: list[int]
    tokens: list[str]
    prompt_length: int
    raw: torch.Tensor
    scores: torch.Tensor
    events: list[MonitorEvent]
    text: str = ""

    def flagged(self) -> torch.Tensor:
        """`[P, n]` True where an event was raised."""
        marks = torch.zeros(self.scores.shape, dtype=torch.bool)
        for event in self.events:
            marks[event.position, self.watchers.index(event.watcher)] = True
        return marks

    def summary(self) -> list[dict[str, Any]]:
        """Per watcher: threshold, events, and the highest aggregated score on the flaggable tokens."""
        first = 0 if self.config.flag_prompt else self.prompt_length
        rows = []
        for column, name in enumerate(self.watchers):
            scores = self.scores[first:, column]
            peak = int(scores.argmax()) + first if len(scores) else None
            rows.append({
                "watcher": name, "threshold": self.thresholds[column],
                "events": sum(e.watcher == name for e in self.events),
                "max_score": float(self.scores[peak, column]) if peak is not None else None,
                "max_at": peak, "max_token": self.tokens[peak] if peak is not None else None,
            })  # fmt: skip
        return rows

    def marked_text(self, left: str = "[[", right: str = "]]") -> str:
        """The text with every token that raised an event between `left` and `right`."""
        marks = self.flagged().any(1).tolist()
        return "".join(f"{left}{t}{right}" if m else t for t, m in zip(self.tokens, marks, strict=True))


def cache_length(kwargs: dict[str, Any]) -> int:
    """Tokens already in the forward's KV cache (0 without one)."""
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    return int(cache.get_seq_length()) if cache is not None and hasattr(cache, "get_seq_length") else 0


class MonitorRun:
    """The state of one monitored call: the token ids so far and every position's scores."""

    def __init__(self, monitor: Monitor, sink: EventSink | None, on_token: Callable[[TokenScores], Any] | None,
                 flag_all: bool) -> None:  # fmt: skip
        self.monitor = monitor
        self.sink = sink
        self.on_token = on_token
        self.flag_all = flag_all
        self.ids: list[int] = []
        self.prompt_length = 0
        self.raw_rows: list[torch.Tensor] = []  # per forward [new, n] on the CPU
        self.score_rows: list[torch.Tensor] = []
        self.tail = torch.zeros(0, len(monitor.watchers))  # the last window − 1 raw rows
        self.events: list[MonitorEvent] = []
        self.pending: torch.Tensor | None = None  # [1, new] input ids of the running forward
        self.step: dict[str, torch.Tensor] = {}  # site -> [new, n_site] scores of the running forward

    def before(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if not isinstance(ids, torch.Tensor):
            raise InputError("the monitor needs token ids (input_ids), not input embeddings")
        if ids.shape[0] != 1:
            raise InputError(
                f"the monitor watches one sequence at a time, not a batch of {ids.shape[0]}; "
                "run each prompt in its own call (concurrent calls are fine)"
            )
        past = cache_length(kwargs)
        if past == 0:  # a new sequence: its first forward is the prompt
            self.ids, self.prompt_length = [], ids.shape[1]
            self.raw_rows, self.score_rows, self.tail = [], [], self.tail[:0]
        elif past != len(self.ids):
            raise InputError(
                f"the forward continues a cache of {past} tokens, but the monitor saw {len(self.ids)}: "
                "start the monitor before the prompt's forward pass"
            )
        self.pending, self.step = ids, {}

    def score_site(self, activation: torch.Tensor, point: HookPoint) -> None:
        self.step[point.name] = self.monitor.scorers[point.name](activation.detach()[0])

    def after(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if self.pending is None or len(self.step) != len(self.monitor.scorers):
            return  # stopped early (stop_at_layer): not every site ran
        monitor, new = self.monitor, self.pending.shape[1]
        raw = torch.empty(new, len(monitor.watchers), device=self.pending.device)
        for site, scorer in monitor.scorers.items():
            raw[:, scorer.columns] = self.step[site].to(raw.device)
        start = len(self.ids)
        self.ids += self.pending[0].tolist()
        host = raw.float().cpu()  # the step's one host sync
        recent = torch.cat([self.tail, host])  # the window never reaches further back than the tail
        aggregated = window_scores(recent, monitor.config.window, monitor.config.aggregate, len(self.tail))
        self.tail = (
            recent[len(recent) - (monitor.config.window - 1) :] if monitor.config.window > 1 else self.tail
        )
        self.raw_rows.append(host)
        self.score_rows.append(aggregated)
        self.pending = None
        self.report(start, host, aggregated)

    @property
    def raw(self) -> torch.Tensor:
        """`[P, n]` every position's own scores."""
        return torch.cat(self.raw_rows) if self.raw_rows else self.tail[:0]

    @property
    def scores(self) -> torch.Tensor:
        """`[P, n]` every position's aggregated scores."""
        return torch.cat(self.score_rows) if self.score_rows else self.tail[:0]

    def report(self, start: int, raw: torch.Tensor, aggregated: torch.Tensor) -> None:
        """Events for the scores above threshold, then `on_token` for each new position."""
        monitor = self.monitor
        above = aggregated > monitor.threshold_tensor  # [new, n]
        if self.on_token is None and not bool(above.any()):
            return
        tokenizer = monitor.model.tokenizer
        for offset, (raws, scores, flags) in enumerate(zip(raw.tolist(), aggregated.tolist(), above.tolist(),
                                                           strict=True)):  # fmt: skip
            position = start + offset
            generated = position - self.prompt_length if position >= self.prompt_length else None
            if not (self.flag_all or monitor.config.flag_prompt or generated is not None):
                flags = [False] * len(flags)
            token = str(tokenizer.decode([self.ids[position]]))
            for column in (c for c, f in enumerate(flags) if f):
                self.emit(position, generated, token, column, scores[column], raws[column])
            if self.on_token is not None:
                self.on_token(TokenScores(position, generated, token, raws, scores, flags))

    def emit(
        self, position: int, generated: int | None, token: str, column: int, score: float, raw: float
    ) -> None:
        monitor = self.monitor
        watcher = monitor.watchers[column]
        event = MonitorEvent(
            position, generated, token, str(monitor.model.tokenizer.decode(self.ids[: position + 1])),
            watcher.name, "latent" if isinstance(watcher, LatentWatcher) else "probe", score, raw,
            monitor.thresholds[column], monitor.config.aggregate, monitor.config.window,
        )  # fmt: skip
        self.events.append(event)
        if self.sink is not None:
            self.sink.emit(event)

    def result(self) -> MonitorResult:
        monitor = self.monitor
        tokens = [str(monitor.model.tokenizer.decode([i])) for i in self.ids]
        return MonitorResult(
            [w.name for w in monitor.watchers], monitor.thresholds, monitor.config, list(self.ids), tokens,
            self.prompt_length, self.raw, self.scores, list(self.events),
            str(monitor.model.tokenizer.decode(self.ids, skip_special_tokens=True)),
        )  # fmt: skip


@dataclass
class Monitor:
    """Watchers on a model. `generate(prompt)` and `forward(text)` return a `MonitorResult`; `watch()`
    wraps any forward or generation of the model. A latent watcher without a threshold must be
    calibrated first (`rama.monitor.calibrate`)."""

    model: HookedModel
    watchers: list[Watcher]
    config: MonitorConfig = field(default_factory=MonitorConfig)
    sink: EventSink | None = None
    checked: bool = False  # watchers already checked against the model (e.g. a calibrated copy)

    def __post_init__(self) -> None:
        if not self.checked:
            check_watchers(self.model, self.watchers)
        self.checked = True
        device = self.model.device
        by_site: dict[str, list[tuple[int, Watcher]]] = {}
        for column, watcher in enumerate(self.watchers):
            by_site.setdefault(watcher.site, []).append((column, watcher))
        self.scorers = {site: SiteScorer(site, pairs, device) for site, pairs in by_site.items()}
        self.thresholds = [float("inf") if w.threshold is None else float(w.threshold) for w in self.watchers]
        self.threshold_tensor = torch.tensor(self.thresholds)
        self.busy = threading.local()

    def with_watchers(self, watchers: list[Watcher]) -> Monitor:
        """The same monitor with other thresholds (the watchers' models and sites unchanged)."""
        return replace(self, watchers=watchers, checked=True)

    def uncalibrated(self) -> list[str]:
        return [w.name for w in self.watchers if w.threshold is None]

    @contextmanager
    def watch(
        self, sink: EventSink | Callable[[MonitorEvent], Any] | None = None,
        on_token: Callable[[TokenScores], Any] | None = None, flag_all: bool = False, calibrating: bool = False,
    ) -> Iterator[MonitorRun]:  # fmt: skip
        """Score every forward of the model inside the block (one sequence at a time)."""
        missing = self.uncalibrated()
        if missing and not calibrating:
            raise ConfigError(
                f"watchers {', '.join(missing)} have no threshold: give one or calibrate them on control "
                "text first (rama.monitor.calibrate)"
            )
        if getattr(self.busy, "value", False):
            raise MonitorBusyError("this monitor is already running in this thread (called from a callback?)")
        chosen = CallbackSink(sink) if callable(sink) and not hasattr(sink, "emit") else sink
        run = MonitorRun(self, chosen or self.sink, on_token, flag_all)
        hooks = [(site, run.score_site) for site in self.scorers]
        with self.model.hooks(hooks):
            handles = [self.model.hf.register_forward_pre_hook(run.before, with_kwargs=True),
                       self.model.hf.register_forward_hook(run.after, with_kwargs=True)]  # fmt: skip
            self.busy.value = True
            try:
                yield run
            finally:
                self.busy.value = False
                for handle in handles:
                    handle.remove()

    def forward(self, text: str, prepend_bos: bool | None = None, **options: Any) -> MonitorResult:
        """Score every token of `text` in one forward pass; every token may raise an event."""
        tokens = self.model.to_tokens(text, prepend_bos=prepend_bos)
        with self.watch(flag_all=True, **options) as run, torch.no_grad():
            self.model(tokens)
        return run.result()

    def generate(
        self, prompt: str, max_new_tokens: int = 20, *, sink: EventSink | Callable[[MonitorEvent], Any] | None = None,
        on_token: Callable[[TokenScores], Any] | None = None, prepend_bos: bool | None = None,
        score_last: bool = True, **generate_kwargs: Any,
    ) -> MonitorResult:  # fmt: skip
        """Greedy (or sampled, through `generate_kwargs`) generation with every token scored. The last
        generated token is never fed back by generation; `score_last` runs its one-token forward on the
        KV cache so that it is scored too (the cost of one more decoding step)."""
        tokens = self.model.to_tokens(prompt, prepend_bos=prepend_bos)  # [1, p]
        with self.watch(sink, on_token) as run, torch.no_grad():
            out: Any = self.model.generate(
                tokens, max_new_tokens, return_dict_in_generate=True, **generate_kwargs
            )
            if score_last:
                last = out.sequences[:, -1:]
                self.model.hf(
                    input_ids=last, use_cache=True, **{cache_keyword(self.model.hf): generation_cache(out)}
                )
        return run.result()


def generation_cache(out: Any) -> Any:
    """The KV cache `generate` returned (`cache`, formerly `past_key_values`)."""
    return out.cache if "cache" in getattr(out, "__dataclass_fields__", {}) else out.past_key_values


def cache_keyword(hf: Any) -> str:
    """The name this transformers version gives the KV cache argument (`cache`, formerly `past_key_values`)."""
    return "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"


def score_offline(monitor: Monitor, activations: dict[str, torch.Tensor]) -> torch.Tensor:
    """`[pos, n]` raw scores of cached activations (`site -> [pos, d]`), as the monitor's hooks compute them."""
    out = torch.empty(next(iter(activations.values())).shape[0], len(monitor.watchers))
    for site, scorer in monitor.scorers.items():
        out[:, scorer.columns] = scorer(activations[site]).float().cpu()
    return out
