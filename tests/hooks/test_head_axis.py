"""Which axis of a site indexes heads comes from the site's spec; checked on real cached tensors."""

from __future__ import annotations

import pytest
import torch

from rama.hooks import SiteError
from tiny_models import ARCHITECTURES, hooked, random_tokens

HEAD_HOOKS = ("hook_q", "hook_k", "hook_v", "hook_z", "hook_result", "hook_attn_scores", "hook_pattern")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_head_axis_has_length_n_heads_in_every_cached_site(arch: str) -> None:
    _, model = hooked(arch)
    with torch.no_grad():
        _, cache = model.run_with_cache(random_tokens(batch=2, pos=12))
    with_heads = []
    for site in model.sites:
        axis = model.head_axis(site)
        if axis is None:
            continue
        with_heads.append(site)
        kv = site.endswith(("attn.hook_k", "attn.hook_v"))
        expected = model.cfg.n_kv_heads if kv else model.cfg.n_heads
        assert cache[site].shape[axis] == expected, (site, axis, tuple(cache[site].shape))
    # every attention site of every block has heads, and nothing else does
    expected_sites = {s for s in model.sites if s.startswith("blocks.") and s.split(".")[-1] in HEAD_HOOKS}
    assert set(with_heads) == expected_sites
    assert len(expected_sites) == len(HEAD_HOOKS) * model.cfg.n_layers


def test_head_axis_values_and_unknown_site() -> None:
    _, model = hooked("llama")
    assert model.head_axis("blocks.1.attn.hook_z") == 2
    assert model.head_axis("blocks.1.attn.hook_pattern") == 1
    assert model.head_axis("blocks.1.attn.hook_attn_scores") == 1
    assert model.head_axis("blocks.1.hook_resid_post") is None
    with pytest.raises(SiteError, match="hook_zz"):
        model.head_axis("blocks.1.attn.hook_zz")
