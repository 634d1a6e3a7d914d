"""The activations one forward pass recorded, keyed by site name."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping

import torch

from rama.hooks.core import HookFn, HookPoint, SiteError


class ActivationCache(Mapping[str, torch.Tensor]):
    """Holds only the sites that were asked for, plus the attention mask of the batch.

    `attention_mask` is `[batch, pos]` (1 = real token) or None when no position was padded.
    """

    def __init__(self, attention_mask: torch.Tensor | None = None) -> None:
        self._data: dict[str, torch.Tensor] = {}
        self.attention_mask = attention_mask

    def __getitem__(self, name: str) -> torch.Tensor:
        if name in self._data:
            return self._data[name]
        close = difflib.get_close_matches(name, list(self._data), n=3, cutoff=0.5)
        hint = f" Cached names like it: {', '.join(close)}." if close else ""
        raise SiteError(
            f"{name!r} is not in this cache ({len(self._data)} sites were recorded).{hint} "
            f"Ask for it with run_with_cache(..., names=[...])."
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        self._data[name] = value

    def __repr__(self) -> str:
        return (
            f"ActivationCache({len(self)} sites: {', '.join(list(self)[:4])}{'…' if len(self) > 4 else ''})"
        )

    def stack(self, site: str) -> torch.Tensor:
        """Stack a per-block site over layers: `stack("hook_resid_post")` -> `[layer, batch, pos, ...]`."""
        pattern = re.compile(rf"^blocks\.(\d+)\.{re.escape(site)}$")
        found = sorted((int(m.group(1)), k) for k in self._data if (m := pattern.match(k)))
        if not found:
            raise SiteError(f"no `blocks.*.{site}` in this cache; cached: {', '.join(list(self)[:6])}")
        return torch.stack([self._data[k] for _, k in found])

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> ActivationCache:
        moved = ActivationCache(self.attention_mask)
        for name, value in self._data.items():
            moved[name] = value.to(device=device, dtype=dtype if value.is_floating_point() else None)
        return moved


def recorder(
    cache: ActivationCache,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    keep_grad: bool = False,
) -> HookFn:
    """A hook function that stores what flows through a site (after any earlier hooks).

    With `keep_grad`, it hands the activation back as the site's value: a site that is a view of a
    module's tensor (a head of a fused projection, `resid_mid`, per-head results) then feeds the
    rest of the forward pass, so gradients with respect to the cached tensor exist.
    """

    def record(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor | None:
        value = activation if keep_grad else activation.detach()
        if device is not None or dtype is not None:
            value = value.to(device=device, dtype=dtype)
        cache[hook.name] = value
        return activation if keep_grad else None

    return record
