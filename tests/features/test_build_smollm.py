"""A feature store for a small SAE freshly trained on SmolLM2-135M, built by `rama features build` over
4,096 tokens of the built-in corpus: the numbers read back match the model run directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from cli_helpers import rama_in_process
from rama.activations import HarvestConfig, harvest, keep_mask
from rama.data import PackConfig, token_batches
from rama.features import FeatureStore
from rama.sae import SAE, fit

pytestmark = pytest.mark.slow
SITE = "blocks.6.hook_resid_post"


def test_build_a_store_for_a_fresh_sae_and_read_a_feature_back(smollm: Any, tmp_path: Path) -> None:
    acts = harvest(smollm, [SITE], HarvestConfig(tokens=4096, progress=False, split="test"))[SITE]
    sae = fit(acts, architecture="topk", d_sae=256, k=16, batch_size=512, total_tokens=40_000, progress=False,
              metadata={"hook_name": SITE, "model_name": "smollm2-135m"})  # fmt: skip
    sae.save(tmp_path / "sae")
    result = rama_in_process("features", "build", str(tmp_path / "sae"), "--tokens", "4096", "--out",
                             str(tmp_path / "f.db"), "--no-progress")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        "256 latents of blocks.6.hook_resid_post and 1536 neurons of blocks.6.mlp.hook_post" in result.stdout
    )
    tokens = torch.cat(list(token_batches(smollm.tokenizer, batch_size=8, config=PackConfig(context_size=128),
                                          max_tokens=4096)))  # fmt: skip
    sae = SAE.load(tmp_path / "sae")
    with FeatureStore(tmp_path / "f.db", sae=sae) as db:
        assert db.meta["tokens"] == int(keep_mask(tokens, smollm.tokenizer, True).sum())
        densities = [db.unit(i)["density"] for i in range(256)]  # type: ignore[index]
        latent = max(range(256), key=lambda i: db.unit(i)["max"] if densities[i] > 0.001 else 0)  # type: ignore[index]
        top = db.examples(latent)
        assert len(top) == 20 and top[0]["activation"] == db.unit(latent)["max"]  # type: ignore[index]
        row, position = divmod(top[0]["token_index"], 128)
        with torch.no_grad():
            _, cache = smollm.run_with_cache(tokens[row : row + 1], [SITE])
            codes = sae.encode(cache[SITE])[0, :, latent]
        assert top[0]["activation"] == pytest.approx(float(codes[position]), rel=1e-4)
        assert top[0]["tokens"][top[0]["focus"]] == smollm.to_string(tokens[row, position : position + 1])
        assert top[0]["activations"] == pytest.approx(
            codes[position - top[0]["focus"] : position - top[0]["focus"] + len(top[0]["tokens"])].tolist(),
            rel=1e-4, abs=1e-5,
        )  # fmt: skip
        quantiles = db.examples(latent, "quantile")
        assert len({e["bin"] for e in quantiles}) == 5
        assert len(db.logits(latent)) == 10 and len(db.neighbours(latent, "cofiring")) == 10
        neuron = db.unit(0, kind="neuron")
        assert (
            neuron is not None and 0.05 < neuron["density"] < 0.95
        )  # SiLU-gated neurons: positive about half the time
        print(f"latent {latent}: density {densities[latent]:.4f}, top token {top[0]['tokens'][top[0]['focus']]!r}, "
              f"promotes {[t['token'] for t in db.logits(latent)[:5]]}")  # fmt: skip
