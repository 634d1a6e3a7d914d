"""Turns site specs into PyTorch hooks on the real modules, and takes them all off again.

One `Attachment` holds every handle of one plan (site -> hook functions). Plans are attached whole,
in forward order, so a derived site (resid_mid) always sees the values hooks upstream produced.
"""

from __future__ import annotations

import difflib
import re
import threading
import weakref
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from rama.errors import RamaError
from rama.hooks import attention
from rama.models.device_map import onloaded
from rama.models.spec import (
    AttentionProbe,
    HeadResult,
    ModuleInput,
    ModuleOutput,
    ResidualSum,
    SiteSpec,
    View,
)

SiteRunner = Callable[[torch.Tensor], "torch.Tensor | None"]
_LAYER = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class HookPoint:
    """What a hook function is told about the site it runs at."""

    name: str

    def layer(self) -> int | None:
        match = _LAYER.match(self.name)
        return int(match.group(1)) if match else None


HookFn = Callable[[torch.Tensor, HookPoint], "torch.Tensor | None"]


class SiteError(RamaError, KeyError):
    """A site name that does not exist (or is not in a cache); the message lists close names."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class HookReturnError(RamaError, ValueError):
    """A hook returned something that cannot replace the activation (wrong type, shape, dtype, device)."""


class StopForward(Exception):
    """Raised by the early-stop hook once the last needed block has run."""


class ModelLock:
    """A re-entrant lock that also answers "does this thread hold it?": code that would run the
    model from a background thread (a streaming harvest) must not do so while the calling thread
    holds the lock inside a `hooks()` block — the background forward would wait forever."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.depth = threading.local()

    def __enter__(self) -> ModelLock:
        self.lock.acquire()
        self.depth.value = getattr(self.depth, "value", 0) + 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.depth.value -= 1
        self.lock.release()

    def held_by_this_thread(self) -> bool:
        return getattr(self.depth, "value", 0) > 0


_LOCKS: weakref.WeakKeyDictionary[nn.Module, ModelLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(root: nn.Module) -> ModelLock:
    """The one re-entrant lock of a HF model: hooks attached to it are shared by every caller, so
    every `HookedModel` wrapping it runs a forward pass (with its hooks) only while holding this."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(root)
        if lock is None:
            lock = _LOCKS[root] = ModelLock()
        return lock


def unknown_site_error(name: str, valid: Sequence[str]) -> SiteError:
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
    hint = f" Closest valid names: {', '.join(close)}." if close else ""
    return SiteError(f"unknown hook site {name!r}.{hint} `model.sites` lists all {len(valid)} of them.")


def make_runner(name: str, fns: Sequence[HookFn]) -> SiteRunner:
    """Runs a site's hook functions in order; each sees the previous one's replacement."""
    point = HookPoint(name)

    def run(activation: torch.Tensor) -> torch.Tensor | None:
        current, replaced = activation, False
        for fn in fns:
            out = fn(current, point)
            if out is None:
                continue
            check_replacement(name, current, out)
            current, replaced = out, True
        return current if replaced else None

    return run


def check_replacement(name: str, expected: torch.Tensor, got: Any) -> None:
    if not isinstance(got, torch.Tensor):
        raise HookReturnError(
            f"hook at {name!r} returned {type(got).__name__}; return a tensor of shape "
            f"{tuple(expected.shape)} to replace the activation, or None to leave it"
        )
    if got.shape != expected.shape:
        raise HookReturnError(
            f"hook at {name!r} returned shape {tuple(got.shape)}; expected {tuple(expected.shape)}"
        )
    if got.dtype != expected.dtype:
        raise HookReturnError(f"hook at {name!r} returned dtype {got.dtype}; expected {expected.dtype}")
    if got.device != expected.device:
        raise HookReturnError(
            f"hook at {name!r} returned a tensor on {got.device}; expected {expected.device}"
        )


def _get(view: View | None, full: torch.Tensor) -> torch.Tensor:
    return full if view is None else view.get(full)


def _put(view: View | None, full: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
    return site if view is None else view.put(full, site)


def _input_of(spec: ModuleInput, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    if spec.keyword in kwargs:
        return kwargs[spec.keyword]
    return args[spec.position]


def _with_input(
    spec: ModuleInput, args: tuple[Any, ...], kwargs: dict[str, Any], value: torch.Tensor
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if spec.keyword in kwargs:
        return args, {**kwargs, spec.keyword: value}
    return (*args[: spec.position], value, *args[spec.position + 1 :]), kwargs


def _replace_output(output: Any, index: int, value: torch.Tensor) -> Any:
    if isinstance(output, tuple):
        return (*output[:index], value, *output[index + 1 :])
    return value


def _output_of(output: Any, index: int) -> torch.Tensor:
    return output[index] if isinstance(output, tuple) else output


class Attachment:
    """The hooks of one plan on one model. `remove()` is idempotent."""

    def __init__(self, root: nn.Module, specs: dict[str, SiteSpec]) -> None:
        self.root = root
        self.specs = specs
        self.handles: list[RemovableHandle] = []
        self.probed: list[nn.Module] = []
        self.exit_stack = ExitStack()

    def module(self, path: str) -> nn.Module:
        return self.root.get_submodule(path)

    def attach(self, name: str, runner: SiteRunner) -> None:
        spec = self.specs[name]
        if isinstance(spec, ModuleOutput):
            self._output(spec, runner)
        elif isinstance(spec, ModuleInput):
            self._input(spec, runner)
        elif isinstance(spec, ResidualSum):
            self._residual_sum(spec, runner)
        elif isinstance(spec, AttentionProbe):
            module = self.module(spec.attention_path)
            attention.add_runner(module, spec.kind, runner)
            self.probed.append(module)
        elif isinstance(spec, HeadResult):
            self._head_result(spec, runner)
        else:  # pragma: no cover - the SiteSpec union is closed
            raise TypeError(f"unknown site spec {spec!r}")

    def start_probing(self) -> None:
        if self.probed:
            self.exit_stack.enter_context(attention.probing(self.probed))

    def _output(self, spec: ModuleOutput, runner: SiteRunner) -> None:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            full = _output_of(output, spec.index)
            new = runner(_get(spec.view, full))
            if new is None:
                return None
            return _replace_output(output, spec.index, _put(spec.view, full, new))

        self.handles.append(self.module(spec.path).register_forward_hook(hook))

    def _input(self, spec: ModuleInput, runner: SiteRunner) -> None:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            full = _input_of(spec, args, kwargs)
            new = runner(_get(spec.view, full))
            if new is None:
                return None
            return _with_input(spec, args, kwargs, _put(spec.view, full, new))

        module = self.module(spec.path)
        self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def _residual_sum(self, spec: ResidualSum, runner: SiteRunner) -> None:
        resid_pre: list[torch.Tensor] = []
        block_input = ModuleInput(spec.block_path)

        def capture(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            resid_pre[:] = [_input_of(block_input, args, kwargs)]

        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            attn_out = _output_of(output, spec.attn_out.index)
            resid_mid = resid_pre[0].to(attn_out.device) + attn_out  # layers split over devices
            new = runner(resid_mid)
            if new is None:
                return None
            return _replace_output(output, spec.attn_out.index, attn_out + (new - resid_mid))

        block = self.module(spec.block_path)
        self.handles.append(block.register_forward_pre_hook(capture, with_kwargs=True))
        self.handles.append(self.module(spec.attn_out.path).register_forward_hook(hook))

    def _head_result(self, spec: HeadResult, runner: SiteRunner) -> None:
        z_input = ModuleInput(spec.out_proj_path)

        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
            z = _input_of(z_input, args, kwargs)
            z = z.view(*z.shape[:-1], spec.n_heads, spec.d_head)
            weight = onloaded(module, "weight")  # offloaded (device_map) weights live on meta here
            assert weight is not None
            if spec.weight_is_transposed:  # Conv1D: [n_heads * d_head, d_model]
                per_head = weight.view(spec.n_heads, spec.d_head, -1)
                result = torch.einsum("bphd,hdm->bphm", z, per_head)
            else:  # Linear: [d_model, n_heads * d_head]
                per_head = weight.view(-1, spec.n_heads, spec.d_head)
                result = torch.einsum("bphd,mhd->bphm", z, per_head)
            new = runner(result)
            if new is None:
                return None
            bias = onloaded(module, "bias")
            summed = new.sum(dim=-2)
            return _replace_output(output, 0, summed if bias is None else summed + bias)

        module = self.module(spec.out_proj_path)
        self.handles.append(module.register_forward_hook(hook, with_kwargs=True))

    def add_stop(self, path: str) -> None:
        def stop(module: nn.Module, args: Any) -> None:
            raise StopForward

        self.handles.append(self.module(path).register_forward_pre_hook(stop))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        attention.clear_runners(self.probed)
        self.probed.clear()
        self.exit_stack.close()


def attach_plan(
    root: nn.Module,
    specs: dict[str, SiteSpec],
    plan: dict[str, list[HookFn]],
    stop_path: str | None = None,
) -> Attachment:
    """Attach every site of `plan` in forward order (the order of `specs`)."""
    attachment = Attachment(root, specs)
    try:
        for name in specs:
            if plan.get(name):
                attachment.attach(name, make_runner(name, plan[name]))
        if stop_path is not None:
            attachment.add_stop(stop_path)
        attachment.start_probing()
    except BaseException:
        attachment.remove()
        raise
    return attachment
