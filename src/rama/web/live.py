"""The dashboard's forward passes: per-token activations of typed text, and steered generation.

One lock serialises every use of the model here, whole requests at a time: two requests never
interleave their forward passes (or one's steering hook with another's generation), so concurrent
requests get exactly what each would get alone.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from rama.activations import keep_mask, stop_layer
from rama.errors import InputError, RamaError
from rama.features.builder import TokenText, check_fit
from rama.hooks.model import HookedModel
from rama.interventions import set_features
from rama.monitor import Monitor, MonitorResult, TokenScores
from rama.sae.base import SAE

MAX_TEXT_CHARS = 2_000
MAX_PROMPT_CHARS = 1_000
MAX_NEW_TOKENS = 64
MAX_EDITS = 4
MAX_STRENGTH = 10_000.0


@dataclass(frozen=True)
class Edit:
    """Set latent `latent` to `value` at every position but the first (an attention sink)."""

    latent: int
    value: float


class LiveModel:
    """A model and an SAE the dashboard runs; `lock` is held for each request's whole computation."""

    def __init__(self, model: HookedModel, sae: SAE) -> None:
        check_fit(sae, model)
        self.model = model
        self.sae = sae.to(model.device).eval()
        self.site = sae.cfg.hook_name
        self.lock = threading.Lock()
        self.decode = TokenText(model.tokenizer)
        layers = stop_layer(model, [self.site])
        self.stop = layers if layers < model.cfg.n_layers else None

    def codes(self, text: str) -> tuple[list[str], torch.Tensor]:
        """(token strings, latent activations `[pos, d_sae]`) of `text`, with a BOS first as in the
        store's contexts; special tokens get 0, as the store's statistics leave them out."""
        check_length("text", text, MAX_TEXT_CHARS)
        tokens = self.model.to_tokens(text, prepend_bos=True)  # [1, pos]
        with self.lock, torch.no_grad():
            _, cache = self.model.run_with_cache(tokens, names=[self.site], stop_at_layer=self.stop)
            codes = self.sae.encode(cache[self.site][0].float())  # [pos, d_sae]
            strings = self.decode(tokens[0].tolist())
        keep = keep_mask(tokens, self.model.tokenizer, True)[0].to(codes.device)
        return strings, (codes * keep[:, None]).cpu()

    def text_activations(
        self, text: str, top: int = 8, per_token: int = 5, scale: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """The `top` latents over the text (each with its activation on every token), and for every
        token its `per_token` strongest latents. Latents are ranked by their peak here over `scale`
        (`[d_sae]`, each latent's max in the store; a peak above it counts as 1), so the few latents of
        large magnitude that fire on every " the" do not hide the specific ones; no scale: by peak."""
        strings, codes = self.codes(text)
        peaks = codes.max(0).values  # [d_sae]
        rank = peaks if scale is None else peaks / torch.maximum(scale.to(peaks), peaks).clamp_min(1e-12)
        best = rank.argsort(descending=True, stable=True)[:top].tolist()  # ties: lower id first
        latents = [
            {"id": int(i), "max": float(peaks[i]), "acts": codes[:, i].tolist()} for i in best if peaks[i] > 0
        ]
        strongest = codes.topk(min(per_token, codes.shape[1]), dim=1)  # [pos, per_token]
        by_token = [
            [{"id": int(i), "value": float(v)} for v, i in zip(vs, ids, strict=True) if v > 0]
            for vs, ids in zip(strongest.values.tolist(), strongest.indices.tolist(), strict=True)
        ]
        return {"tokens": strings, "latents": latents, "by_token": by_token}

    def steer(self, prompt: str, edits: list[Edit], max_new_tokens: int = 24) -> dict[str, Any]:
        """Greedy continuations without and with the edits (`set_features`, error term kept), each with
        its perplexity under the unedited model."""
        check_length("prompt", prompt, MAX_PROMPT_CHARS)
        if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
            raise InputError(f"new tokens must be between 1 and {MAX_NEW_TOKENS}, not {max_new_tokens}")
        if not edits or len(edits) > MAX_EDITS:
            raise InputError(f"pick between 1 and {MAX_EDITS} latents to set, not {len(edits)}")
        for edit in edits:
            if not abs(edit.value) <= MAX_STRENGTH:
                raise InputError(f"a latent's value must lie within ±{MAX_STRENGTH:g}, not {edit.value}")
        prompt_ids = self.model.to_tokens(prompt, prepend_bos=True)  # [1, p]
        hook = set_features(self.model, self.sae, [e.latent for e in edits], [e.value for e in edits],
                            positions=slice(1, None))  # fmt: skip
        results = {}
        with self.lock:
            for name, hooks in (("plain", []), ("steered", [hook])):
                out = self.model.generate(prompt_ids, max_new_tokens, fwd_hooks=hooks)
                assert isinstance(out, torch.Tensor)
                new = out[0, prompt_ids.shape[1] :]
                results[name] = {
                    "text": self.model.to_string(new),
                    "tokens": len(new),
                    "perplexity": self.perplexity(out[0], prompt_ids.shape[1]),
                }
        return {"prompt": prompt, "edits": edits, **results}

    def perplexity(self, ids: torch.Tensor, start: int) -> float:
        """exp(mean cross entropy) of `ids[start:]` given what precedes them, under the unedited model,
        on the generated ids themselves (no re-tokenisation); NaN for an empty continuation."""
        if len(ids) <= start:
            return math.nan
        with torch.no_grad():
            logits = self.model(ids[None])[0]  # [pos, vocab]
        loss = torch.nn.functional.cross_entropy(
            logits[start - 1 : -1].float(), ids[start:].to(logits.device)
        )
        return float(loss.exp())


def check_length(what: str, text: str, limit: int) -> None:
    """An InputError (a 4xx on the web) for empty text or text over `limit` characters."""
    if not text.strip():
        raise InputError(f"the {what} is empty; type some text")
    if len(text) > limit:
        raise InputError(f"the {what} is {len(text):,} characters long; the limit is {limit:,}")


class MonitorStream:
    """One /monitor request: the monitored generation runs in its own thread and hands each token's
    scores to the page as soon as its forward pass has computed them (`tokens()` blocks until the next
    one); `result` or `error` is set once it ends. The monitor serialises concurrent requests itself."""

    def __init__(self, monitor: Monitor, prompt: str, max_new_tokens: int) -> None:
        check_length("prompt", prompt, MAX_PROMPT_CHARS)
        if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
            raise InputError(f"new tokens must be between 1 and {MAX_NEW_TOKENS}, not {max_new_tokens}")
        self.monitor, self.prompt, self.max_new_tokens = monitor, prompt, max_new_tokens
        self.queue: queue.Queue[TokenScores | None] = queue.Queue()
        self.result: MonitorResult | None = None
        self.error: str | None = None
        self.thread = threading.Thread(target=self.run, daemon=True, name="rama-monitor")

    def start(self) -> MonitorStream:
        self.thread.start()
        return self

    def run(self) -> None:
        try:
            self.result = self.monitor.generate(self.prompt, self.max_new_tokens, on_token=self.queue.put)
        except RamaError as error:
            self.error = str(error)
        except Exception as error:  # the page is already streaming: say so in it rather than cut it short
            self.error = f"the monitor failed ({type(error).__name__}); see the server's log"
            raise
        finally:
            self.queue.put(None)

    def tokens(self) -> Iterator[TokenScores]:
        while (item := self.queue.get()) is not None:
            yield item
