"""`HookedModel`: a Hugging Face model with TransformerLens's site names and HF's exact numbers."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from rama.errors import ConfigError, InputError
from rama.hooks.cache import ActivationCache, recorder
from rama.hooks.core import (
    Attachment,
    HookFn,
    HookPoint,
    StopForward,
    attach_plan,
    model_lock,
    unknown_site_error,
)
from rama.hooks.tokens import Batch, ContextTooLongError, Inputs, check_mask, pad_id, tokenize
from rama.models.config import ModelConfig
from rama.models.device_map import DeviceMap, placement
from rama.models.loading import load_hf
from rama.models.registry import adapter_for
from rama.models.sites import block_site
from rama.models.spec import head_axis

NameFilter = str | Sequence[str] | Callable[[str], bool] | None
FwdHooks = Sequence[tuple[str | Callable[[str], bool], HookFn]]


class HookedModel:
    """Wraps a loaded HF model in place; hooks exist only while a call or `hooks()` block runs.

    Safe to share between threads (a web server, a monitor): every forward pass, `generate` and
    `with model.hooks(...)` block holds the HF model's re-entrant lock for its whole duration, so
    concurrent calls are serialised, not run in parallel, and each sees only its own hooks. Nested
    calls from the same thread (a `run_with_cache` inside a `hooks()` block) still work. Calling
    `model.hf` directly bypasses the lock.
    """

    def __init__(self, hf_model: nn.Module, tokenizer: Any, name: str = "") -> None:
        self.hf: Any = hf_model
        self.tokenizer = tokenizer
        self.adapter = adapter_for(hf_model)
        base = self.adapter.config()
        self.cfg = ModelConfig(**{**base.to_dict(), "name": name or base.name})
        self._specs = self.adapter.sites()
        self.sites: list[str] = list(self._specs)
        self._groups: list[tuple[list[tuple[str, HookFn]], int | None]] = []
        self._attachment: Attachment | None = None
        self._lock = model_lock(hf_model)

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"HookedModel({c.name or c.model_type!r}: {c.architecture}, {c.n_layers} layers, "
            f"d_model {c.d_model}, {len(self.sites)} sites)"
        )

    @property
    def device(self) -> torch.device:
        """Where inputs go: with a device_map, the device accelerate runs the model from (its first
        parameters may be offloaded to "meta")."""
        execution_device = getattr(getattr(self.hf, "_hf_hook", None), "execution_device", None)
        if execution_device is not None:
            return torch.device(execution_device)
        return next(self.hf.parameters()).device

    @property
    def W_E(self) -> torch.Tensor:
        """`[d_vocab, d_model]`."""
        return self.adapter.embedding_weight()

    @property
    def W_U(self) -> torch.Tensor:
        """`[d_model, d_vocab]`."""
        weight = self.adapter.unembedding_weight()
        if weight is None:
            raise AttributeError(f"{self.cfg.model_type} model has no unembedding (no LM head)")
        return weight

    # ---- names ---------------------------------------------------------------------------------

    def resolve(self, names: NameFilter) -> list[str]:
        """Site names from None (all), a name, a glob (`blocks.*.hook_resid_post`), a list or a predicate."""
        if names is None:
            return list(self.sites)
        if callable(names):
            return [s for s in self.sites if names(s)]
        wanted = [names] if isinstance(names, str) else list(names)
        out: list[str] = []
        for name in wanted:
            matches = [s for s in self.sites if fnmatch.fnmatchcase(s, name)] if _is_glob(name) else [name]
            if not matches or (not _is_glob(name) and name not in self._specs):
                raise unknown_site_error(name, self.sites)
            out.extend(m for m in matches if m not in out)
        return out

    def runs_in_this_thread_only(self) -> bool:
        """True inside a `hooks()` block or a forward of this thread: the model lock is held here, so
        a forward started from another thread would wait until this thread lets go."""
        return self._lock.held_by_this_thread()

    def head_axis(self, site: str) -> int | None:
        """The axis of `site`'s activation that indexes heads (`blocks.3.attn.hook_z` -> 2,
        `blocks.3.attn.hook_pattern` -> 1), or None for a site without heads."""
        if site not in self._specs:
            raise unknown_site_error(site, self.sites)
        return head_axis(self._specs[site])

    def site_shape(self, site: str) -> tuple[int, ...]:
        """The shape of a site's activation for a `[1, 2]` token input (so `[-1]` is its width)."""
        [name] = self.resolve([site])
        tokens = torch.zeros(1, 2, dtype=torch.long)
        layer = HookPoint(name).layer()
        with torch.no_grad():
            _, cache = self.run_with_cache(tokens, [name], stop_at_layer=None if layer is None else layer + 1)
        return tuple(cache[name].shape)

    # ---- tokens --------------------------------------------------------------------------------

    def tokenize(
        self, inputs: Inputs, *, prepend_bos: bool | None = None, padding_side: str = "right"
    ) -> Batch:
        """Checked `[batch, pos]` tokens and mask. `prepend_bos=None` (the default) does what the
        tokenizer does: SmolLM2's adds no BOS, unlike TransformerLens and rama's SAE training contexts."""
        return tokenize(
            self.tokenizer,
            inputs,
            prepend_bos=prepend_bos,
            padding_side=padding_side,
            n_ctx=self.cfg.n_ctx,
            d_vocab=self.cfg.d_vocab,
        )

    def to_tokens(
        self, inputs: Inputs, *, prepend_bos: bool | None = None, padding_side: str = "right"
    ) -> torch.Tensor:
        """`[batch, pos]` token ids (padded with the pad token)."""
        return self.tokenize(inputs, prepend_bos=prepend_bos, padding_side=padding_side).tokens

    def to_str_tokens(self, inputs: str | torch.Tensor, *, prepend_bos: bool | None = None) -> list[str]:
        tokens = self.to_tokens(inputs, prepend_bos=prepend_bos)[0]
        return [self.tokenizer.decode([int(t)]) for t in tokens]

    def to_string(self, tokens: torch.Tensor | Sequence[int]) -> str | list[str]:
        if isinstance(tokens, torch.Tensor) and tokens.ndim == 2:
            return [str(self.tokenizer.decode(row)) for row in tokens.tolist()]
        ids = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
        return str(self.tokenizer.decode(ids))

    # ---- hooks ---------------------------------------------------------------------------------

    @contextmanager
    def hooks(self, fwd_hooks: FwdHooks = (), *, stop_at_layer: int | None = None) -> Iterator[HookedModel]:
        """Hooks active for every forward inside the block (also `generate`); removed on exit or error."""
        entries = [(site, fn) for target, fn in fwd_hooks for site in self._targets(target)]
        self._check_stop(stop_at_layer)
        with self._lock:
            self._groups.append((entries, stop_at_layer))
            try:
                self._reattach()
                yield self
            finally:
                self._groups.pop()
                self._reattach()

    def _targets(self, target: str | Callable[[str], bool]) -> list[str]:
        found = self.resolve(target)
        if not found:
            raise unknown_site_error(str(target), self.sites)
        return found

    def _check_stop(self, stop_at_layer: int | None) -> None:
        if stop_at_layer is not None and not 0 < stop_at_layer <= self.cfg.n_layers:
            raise ConfigError(f"stop_at_layer must be in 1..{self.cfg.n_layers}, not {stop_at_layer}")

    def _reattach(self) -> None:
        if self._attachment is not None:
            self._attachment.remove()
            self._attachment = None
        if not self._groups:
            return
        plan: dict[str, list[HookFn]] = {}
        for entries, _ in self._groups:
            for site, fn in entries:
                plan.setdefault(site, []).append(fn)
        stops = [s for _, s in self._groups if s is not None and s < self.cfg.n_layers]
        stop_path = self.adapter.block_path(min(stops)) if stops else None
        self._attachment = attach_plan(self.hf, self._specs, plan, stop_path)

    # ---- running -------------------------------------------------------------------------------

    def forward(
        self,
        inputs: Inputs,
        *,
        attention_mask: torch.Tensor | None = None,
        prepend_bos: bool | None = None,
    ) -> torch.Tensor:
        """Logits `[batch, pos, d_vocab]` (an encoder without a head: last hidden state)."""
        batch = self.tokenize(inputs, prepend_bos=prepend_bos)
        mask = self._mask(batch, attention_mask)
        with self._lock:
            return self._run(batch.tokens, mask)

    def _mask(self, batch: Batch, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        check_mask(attention_mask, batch.tokens)
        return attention_mask if attention_mask is not None else batch.attention_mask

    __call__ = forward

    def _run(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        kwargs: dict[str, Any] = {"input_ids": tokens.to(self.device)}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask.to(self.device)
        if self.cfg.is_causal:
            kwargs["use_cache"] = False
        output = self.hf(**kwargs)
        logits = getattr(output, "logits", None)
        return logits if logits is not None else output.last_hidden_state

    def run_with_hooks(
        self,
        inputs: Inputs,
        fwd_hooks: FwdHooks = (),
        *,
        attention_mask: torch.Tensor | None = None,
        prepend_bos: bool | None = None,
    ) -> torch.Tensor:
        """`fn(activation, hook)` returns a replacement tensor or None; hooks are removed afterwards."""
        batch = self.tokenize(inputs, prepend_bos=prepend_bos)
        mask = self._mask(batch, attention_mask)
        with self.hooks(fwd_hooks):
            return self._run(batch.tokens, mask)

    def run_with_cache(
        self,
        inputs: Inputs,
        names: NameFilter = None,
        *,
        fwd_hooks: FwdHooks = (),
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        stop_at_layer: int | None = None,
        keep_grad: bool = False,
        attention_mask: torch.Tensor | None = None,
        prepend_bos: bool | None = None,
    ) -> tuple[torch.Tensor | None, ActivationCache]:
        """(logits, cache). `stop_at_layer=L` ends the forward after block L-1 and returns None logits.
        `prepend_bos=None` keeps the tokenizer's own choice (no BOS for SmolLM2), as before."""
        batch = self.tokenize(inputs, prepend_bos=prepend_bos)
        mask = self._mask(batch, attention_mask)
        cache = ActivationCache(mask)
        sites = self.resolve(names)
        self._check_stop(stop_at_layer)
        if stop_at_layer is not None:
            sites = self._before_stop(sites, stop_at_layer, explicit=names is not None)
        record = recorder(cache, device=device, dtype=dtype, keep_grad=keep_grad)
        hooks = [*fwd_hooks, *[(s, record) for s in sites]]
        with (
            self.hooks(hooks, stop_at_layer=stop_at_layer),
            torch.set_grad_enabled(keep_grad or torch.is_grad_enabled()),
        ):
            try:
                return self._run(batch.tokens, mask), cache
            except StopForward:
                return None, cache

    def _before_stop(self, sites: list[str], stop_at_layer: int, explicit: bool) -> list[str]:
        if stop_at_layer >= self.cfg.n_layers:
            return sites
        last = self.sites.index(block_site(stop_at_layer - 1, "hook_resid_post"))
        late = [s for s in sites if self.sites.index(s) > last]
        if late and explicit:
            raise ConfigError(
                f"sites {late[:3]} come after stop_at_layer={stop_at_layer}; they would never run"
            )
        return [s for s in sites if s not in late]

    def generate(
        self,
        prompt: Inputs,
        max_new_tokens: int = 20,
        *,
        fwd_hooks: FwdHooks = (),
        do_sample: bool = False,
        temperature: float = 1.0,
        prepend_bos: bool | None = None,
        **generate_kwargs: Any,
    ) -> str | list[str] | torch.Tensor:
        """Continue a prompt (or a left-padded batch); hooks run at every generated position.

        Returns text for text input (the prompt included), tokens for token input.
        `prepend_bos=None` keeps the tokenizer's own choice (no BOS for SmolLM2), as before.
        """
        if not self.cfg.is_causal:
            raise InputError(f"{self.cfg.model_type} is an encoder; it cannot generate")
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, not {max_new_tokens}")
        if do_sample and not temperature > 0:
            raise ConfigError(f"temperature must be above 0 when sampling, not {temperature}")
        batch = self.tokenize(prompt, prepend_bos=prepend_bos, padding_side="left")
        if self.cfg.n_ctx and batch.tokens.shape[-1] + max_new_tokens > self.cfg.n_ctx:
            raise ContextTooLongError(
                f"the prompt is {batch.tokens.shape[-1]} tokens and {max_new_tokens} new tokens were asked "
                f"for, but the model's context is {self.cfg.n_ctx} tokens; ask for at most "
                f"{max(self.cfg.n_ctx - batch.tokens.shape[-1], 0)} new tokens or shorten the prompt"
            )
        mask = batch.attention_mask if batch.attention_mask is not None else torch.ones_like(batch.tokens)
        options: dict[str, Any] = {"do_sample": do_sample, "max_new_tokens": max_new_tokens}
        if do_sample:
            options["temperature"] = temperature
        with self.hooks(fwd_hooks), torch.no_grad():
            out = self.hf.generate(
                input_ids=batch.tokens.to(self.device),
                attention_mask=mask.to(self.device),
                pad_token_id=pad_id(self.tokenizer),
                **options,
                **generate_kwargs,
            )
        if isinstance(prompt, torch.Tensor):
            return out
        texts = [str(self.tokenizer.decode(row, skip_special_tokens=True)) for row in out.tolist()]
        return texts[0] if isinstance(prompt, str) else texts


def _is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")


def load(
    name_or_path: str | os.PathLike[str] | nn.Module,
    tokenizer: Any = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    device_map: DeviceMap | None = None,
    offload_folder: str | os.PathLike[str] | None = None,
    max_memory: Mapping[int | str, int | str] | None = None,
) -> HookedModel:
    """A `HookedModel` from a built-in name (`smollm2-135m`, `minilm-l6`), a local HF folder, a hub id,
    or an already-constructed `transformers` model plus its tokenizer.

    `device_map` spreads a model bigger than one device over GPUs, CPU and disk as Hugging Face does
    ("auto", or {module name: "cpu" | "disk" | GPU index | "cuda:N"}); "disk" needs `offload_folder`.
    Every site still gives the numbers of the unsplit model (docs/scale-device-map.md)."""
    if isinstance(name_or_path, nn.Module):
        if tokenizer is None:
            raise TypeError("pass the model's tokenizer too: rama.load(model, tokenizer)")
        if device_map is not None:
            raise ConfigError(
                "device_map applies when rama loads the weights; give a name or folder, not a model"
            )
        name_or_path.eval()
        return HookedModel(name_or_path, tokenizer)
    if device_map is None and (offload_folder is not None or max_memory is not None):
        raise ConfigError(
            "offload_folder and max_memory only apply with a device_map (e.g. device_map='auto')"
        )
    where = None if device_map is None else placement(device_map, offload_folder, max_memory)
    hf_model, hf_tokenizer = load_hf(
        name_or_path, device=device, dtype=dtype, attn_implementation=attn_implementation, placement=where
    )
    if hf_tokenizer.pad_token_id is None and hf_tokenizer.eos_token_id is not None:
        hf_tokenizer.pad_token = hf_tokenizer.eos_token
    return HookedModel(hf_model, hf_tokenizer, name=str(name_or_path))
