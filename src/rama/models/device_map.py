"""Checking a Hugging Face `device_map` before any weight is read.

`from_pretrained(device_map=...)` quietly puts modules a dict leaves out on the CPU, ignores names
that match no module, and only complains about a missing offload folder halfway through loading.
For a model bigger than a device that is the worst time to find out, so rama checks the map against
the model's module tree first, built on the meta device from its config (no memory, no weights).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rama.errors import ConfigError

Device = str | int | torch.device
DeviceMap = str | Mapping[str, Device]
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_DEVICE = re.compile(r"^(cpu|disk|cuda|mps|xpu|npu)(:\d+)?$")
SHOWN = 8  # names listed in an error before "and N more"


@dataclass(frozen=True)
class Placement:
    """Where a model's weights go: a strategy or a {module: device} map, plus what HF needs for it."""

    device_map: str | dict[str, str | int]
    offload_folder: str | None = None
    max_memory: dict[int | str, int | str] | None = None

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"device_map": self.device_map}
        if self.offload_folder is not None:
            kwargs["offload_folder"] = self.offload_folder
        if self.max_memory is not None:
            kwargs["max_memory"] = self.max_memory
        return kwargs


def placement(
    device_map: DeviceMap,
    offload_folder: str | os.PathLike[str] | None = None,
    max_memory: Mapping[int | str, int | str] | None = None,
) -> Placement:
    """A checked `Placement`; the module names of a dict map are checked later by `check_modules`."""
    folder = None if offload_folder is None else os.fspath(offload_folder)
    memory = None if max_memory is None else dict(max_memory)
    if isinstance(device_map, str) and device_map in STRATEGIES:
        return Placement(device_map, folder, memory)
    if memory is not None:
        raise ConfigError(
            f"max_memory only guides a device_map strategy ({', '.join(STRATEGIES)}); "
            f"a map of modules to devices already says where everything goes"
        )
    if isinstance(device_map, (str, int, torch.device)):
        device_map = {"": device_map}
    if not isinstance(device_map, Mapping) or not device_map:
        raise ConfigError(
            f"device_map must be one of {', '.join(STRATEGIES)}, a device, or a non-empty dict "
            f"{{module name: device}}, not {device_map!r}"
        )
    checked = {str(name): device_of(str(name), value) for name, value in device_map.items()}
    on_disk = [name or '""' for name, value in checked.items() if value == "disk"]
    if on_disk and folder is None:
        raise ConfigError(
            f'device_map puts {", ".join(on_disk[:SHOWN])} on "disk" but no offload_folder was given; '
            f"pass offload_folder=<a folder with room for those weights>"
        )
    return Placement(checked, folder, None)


def device_of(name: str, value: Device) -> str | int:
    """HF's spelling of one module's device (an int for a GPU index), checked against this machine."""
    if isinstance(value, torch.device):
        value = str(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(
            f"device_map[{name!r}] must be a device like 'cpu', 'disk', 0 or 'cuda:1', not {value!r}"
        )
    if isinstance(value, str) and not _DEVICE.match(value):
        raise ConfigError(
            f"device_map[{name!r}] = {value!r} is not a device; use 'cpu', 'disk', 0 or 'cuda:1'"
        )
    index = value if isinstance(value, int) else _cuda_index(value)
    if index is not None:
        count = torch.cuda.device_count()
        if not 0 <= index < count:
            raise ConfigError(
                f"device_map[{name!r}] = {value!r} names GPU {index}, but this machine has {count} GPU(s); "
                f"use an index below {count}, 'cpu' or 'disk'"
            )
    return value


def _cuda_index(value: str) -> int | None:
    if value == "cuda":
        return 0
    return int(value.split(":")[1]) if value.startswith("cuda:") else None


def meta_model(model_class: Any, config: Any) -> nn.Module:
    """The model's module tree with no memory behind its tensors."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=True):
        model: nn.Module = model_class.from_config(config)
    return model


def check_modules(device_map: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """Every name is a module, every weight and buffer is placed, and no decoder layer is cut in two.

    Returns the map with a "" entry ("everything else") spelled out module by module: accelerate
    1.15 fails to load a map that mixes "" with modules on "disk"."""
    modules = dict(model.named_modules())
    unknown = [name for name in device_map if name not in modules]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(modules), n=3, cutoff=0.5)
        hint = f" (closest: {', '.join(close)})" if close else ""
        raise ConfigError(
            f"device_map names {_listing(unknown)}, which the model does not have{hint}; keys are module "
            f"names from model.named_modules(), such as {_listing([n for n in modules if n.count('.') <= 1][1:])}"
        )
    tensors = [name for name, _ in model.named_parameters()] + [name for name, _ in model.named_buffers()]
    unplaced = _topmost([name for name in tensors if _owner(name, device_map) is None], modules)
    if unplaced:
        raise ConfigError(
            f"device_map leaves {_listing(unplaced)} unplaced; give each a device, or place a parent "
            f'module (or "" for everything not listed)'
        )
    _check_whole_layers(device_map, modules, set(getattr(model, "_no_split_modules", None) or ()))
    _check_tied_together(device_map, model)
    return expand_rest(device_map, model) if "" in device_map and len(device_map) > 1 else dict(device_map)


def expand_rest(device_map: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """The "" entry replaced by the largest modules holding nothing placed elsewhere, in model order."""
    rest, placed = device_map[""], [name for name in device_map if name]
    out: dict[str, Any] = {}

    def visit(prefix: str, module: nn.Module) -> None:
        if prefix and prefix in device_map:
            out[prefix] = device_map[prefix]
        elif prefix and not any(name.startswith(prefix + ".") for name in placed):
            out[prefix] = rest
        else:
            if prefix and any(True for _ in module.parameters(recurse=False)):
                out[prefix] = rest  # tensors of its own next to placed children
            for child, sub in module.named_children():
                visit(f"{prefix}.{child}" if prefix else child, sub)

    visit("", model)
    return out


def _check_tied_together(device_map: Mapping[str, Any], model: nn.Module) -> None:
    """Tied weights (GPT-2's embedding and LM head) are one tensor, so they need one device."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    for tied in names.values():
        owners = [_owner(name, device_map) or "" for name in tied]
        if len({str(device_map.get(owner)) for owner in owners}) > 1:
            where = ", ".join(f"{owner!r} on {device_map.get(owner)!r}" for owner in dict.fromkeys(owners))
            raise ConfigError(
                f"{' and '.join(tied)} are one tied tensor but device_map puts {where}; give them one device"
            )


def _owner(tensor: str, device_map: Mapping[str, Any]) -> str | None:
    """The map key that places a parameter or buffer: the module itself or its nearest ancestor."""
    parts = tensor.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        prefix = ".".join(parts[:cut])
        if prefix in device_map:
            return prefix
    return None


def _topmost(tensors: Iterable[str], modules: Mapping[str, nn.Module]) -> list[str]:
    """The unplaced tensors named by their highest module with nothing placed inside it."""
    unplaced = set(tensors)
    whole: dict[str, bool] = {}  # module name -> every tensor inside it is unplaced
    names: list[str] = []
    for tensor in sorted(unplaced):
        parts = tensor.split(".")
        owner = tensor
        for cut in range(1, len(parts)):
            prefix = ".".join(parts[:cut])
            if prefix not in whole:
                whole[prefix] = prefix in modules and unplaced.issuperset(_tensors_under(prefix, modules))
            if whole[prefix]:
                owner = prefix
                break
        if owner not in names:
            names.append(owner)
    return names


def _tensors_under(prefix: str, modules: Mapping[str, nn.Module]) -> list[str]:
    module = modules[prefix]
    own = [name for name, _ in module.named_parameters()] + [name for name, _ in module.named_buffers()]
    return [f"{prefix}.{name}" for name in own]


def _check_whole_layers(
    device_map: Mapping[str, Any], modules: Mapping[str, nn.Module], no_split: set[str]
) -> None:
    """A decoder layer runs on one device: rama's per-head and residual sites read inside it."""
    for name in device_map:
        parts = name.split(".")
        for cut in range(1, len(parts)):
            parent = ".".join(parts[:cut])
            if type(modules[parent]).__name__ in no_split:
                raise ConfigError(
                    f"device_map places {name!r} apart from the rest of {parent!r} "
                    f"({type(modules[parent]).__name__}); place whole layers: give {parent!r} one device"
                )


def _listing(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def onloaded(module: nn.Module, name: str) -> torch.Tensor | None:
    """A module's parameter or buffer as its forward sees it.

    Accelerate keeps an offloaded module's weights on "meta" except while its own `forward` runs,
    so a PyTorch hook around that forward (rama's per-head `hook_result`) must fetch them itself:
    from the offload store, onto the device the module runs on."""
    tensor: torch.Tensor | None = getattr(module, name, None)
    if tensor is None or tensor.device.type != "meta":
        return tensor
    hook = getattr(module, "_hf_hook", None)
    weights = getattr(hook, "weights_map", None)
    if weights is None:
        raise ConfigError(
            f"{type(module).__name__}.{name} is on the meta device and no offload hook holds it"
        )
    return weights[name].to(hook.execution_device)  # type: ignore[union-attr]
