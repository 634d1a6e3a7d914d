"""Top activations agree with a direct computation of the codes, and name the right tokens."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from rama.data import PackConfig, token_batches
from rama.features import top_activations
from rama.sae import SAE, SAEConfig, TopKConfig

pytestmark = pytest.mark.slow


def test_top_activations_match_the_codes(smollm: Any) -> None:
    site = "blocks.4.hook_resid_post"
    torch.manual_seed(0)
    sae = SAE.create(
        SAEConfig(d_in=576, d_sae=64, architecture="topk", arch=TopKConfig(k=8), hook_name=site)
    ).eval()
    batches = list(
        token_batches(smollm.tokenizer, batch_size=2, config=PackConfig(context_size=32), max_tokens=128)
    )
    found = top_activations(sae, smollm, batches, latents=[3, 7], k=3)
    tokens = torch.cat(batches)
    with torch.no_grad():
        _, cache = smollm.run_with_cache(tokens, [site])
        codes = sae.encode(cache[site])[..., 3]
    codes[tokens == smollm.tokenizer.bos_token_id] = 0
    best = found[3][0]
    assert best.activation == pytest.approx(float(codes.max()), rel=1e-5)
    row, position = divmod(int(codes.flatten().argmax()), tokens.shape[1])
    assert best.token == smollm.to_string(tokens[row, position : position + 1])
    assert best.context.endswith(f"[{best.token}]")
    assert [a.activation for a in found[3]] == sorted((a.activation for a in found[3]), reverse=True)
    with pytest.raises(ValueError, match=r"latents must be in 0\.\.63"):
        top_activations(sae, smollm, batches, latents=[64])
