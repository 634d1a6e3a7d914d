"""SAE files: rama/SAELens v6 round trips, and reading Gemma Scope, sparsify, dictionary_learning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from rama.sae import SAE, SAEConfig, TopKConfig, fit
from rama.sae.io import SAEFormatError
from rama.toys import FeatureSuite
from sae_helpers import perturbed


@pytest.mark.parametrize(
    "cfg",
    [
        SAEConfig(
            d_in=12, d_sae=40, architecture="topk", arch=TopKConfig(k=5), hook_name="blocks.3.hook_resid_post"
        ),
        SAEConfig(d_in=12, d_sae=40, architecture="standard"),
        SAEConfig(d_in=12, d_sae=40, architecture="jumprelu"),
        SAEConfig(d_in=12, d_sae=40, architecture="gated"),
        SAEConfig(
            d_in=12,
            d_sae=40,
            architecture="topk",
            arch=TopKConfig(k=5),
            d_out=7,
            skip_connection=True,
            hook_name="blocks.0.ln2.hook_normalized",
            hook_name_out="blocks.0.hook_mlp_out",
        ),
    ],
    ids=["topk", "standard", "jumprelu", "gated", "skip-transcoder"],
)
def test_round_trip_in_saelens_layout(cfg: SAEConfig, tmp_path: Path) -> None:
    sae = perturbed(cfg)
    sae.save(tmp_path / "sae", sparsity=torch.full((40,), -2.0))
    raw = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    weights = load_file(str(tmp_path / "sae" / "sae_weights.safetensors"))
    assert raw["d_in"] == 12 and raw["d_sae"] == 40 and raw["metadata"]["hook_name"] == cfg.hook_name
    assert weights["W_enc"].shape == (12, 40) and weights["W_dec"].shape == (40, cfg.output_dim)
    assert load_file(str(tmp_path / "sae" / "sparsity.safetensors"))["sparsity"].shape == (40,)
    loaded = SAE.load(tmp_path / "sae")
    x = torch.randn(20, 12)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), sae.encode(x))
        torch.testing.assert_close(loaded(x), sae(x))
    assert loaded.cfg.hook_name_out == cfg.hook_name_out


def test_batchtopk_is_saved_as_the_jumprelu_it_is_at_inference(tmp_path: Path) -> None:
    x, _ = FeatureSuite().sample(8192, torch.Generator().manual_seed(0))
    sae = fit(
        x, architecture="batchtopk", d_sae=128, k=5, batch_size=1024, total_tokens=30_000, progress=False
    )
    sae.save(tmp_path / "b")
    assert json.loads((tmp_path / "b" / "cfg.json").read_text())["architecture"] == "jumprelu"
    loaded = SAE.load(tmp_path / "b")
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x[:100]), sae.encode(x[:100]))


def test_reads_gemma_scope_params_npz_without_b_dec_subtraction(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    params = {
        "W_enc": rng.normal(size=(8, 20)),
        "W_dec": rng.normal(size=(20, 8)),
        "b_enc": rng.normal(size=20),
        "b_dec": rng.normal(size=8),
        "threshold": np.abs(rng.normal(size=20)),
    }
    np.savez(tmp_path / "params.npz", **params)
    sae = SAE.load(tmp_path)
    x = torch.randn(5, 8, dtype=torch.float64)
    pre = x @ torch.tensor(params["W_enc"]) + torch.tensor(
        params["b_enc"]
    )  # Gemma Scope: no b_dec subtraction
    expected = pre * (pre > torch.tensor(params["threshold"]))
    torch.testing.assert_close(sae.encode(x.float()), expected.float(), rtol=1e-5, atol=1e-5)


def test_reads_sparsify_layout_with_its_decoder_orientation(tmp_path: Path) -> None:
    encoder, bias = torch.randn(30, 8), torch.randn(30)  # sparsify: encoder.weight [M, D]
    W_dec, b_dec = torch.randn(30, 8), torch.randn(8)
    save_file(
        {"encoder.weight": encoder, "encoder.bias": bias, "W_dec": W_dec, "b_dec": b_dec},
        str(tmp_path / "sae.safetensors"),
    )
    (tmp_path / "cfg.json").write_text(
        json.dumps(
            {
                "activation": "topk",
                "k": 4,
                "num_latents": 30,
                "d_in": 8,
                "expansion_factor": 4,
                "normalize_decoder": True,
                "multi_topk": False,
                "skip_connection": False,
                "transcode": False,
            }
        )
    )
    sae = SAE.load(tmp_path)
    x = torch.randn(6, 8)
    values, indices = ((x - b_dec) @ encoder.T + bias).topk(4)
    expected = torch.zeros(6, 30).scatter_(1, indices, values.relu())
    torch.testing.assert_close(sae.encode(x), expected)
    torch.testing.assert_close(sae(x), expected @ W_dec + b_dec)


def test_reads_dictionary_learning_autoencoder(tmp_path: Path) -> None:
    state = {
        "encoder.weight": torch.randn(24, 8),
        "encoder.bias": torch.randn(24),
        "decoder.weight": torch.randn(8, 24),
        "bias": torch.randn(8),
    }
    torch.save(state, tmp_path / "ae.pt")
    (tmp_path / "config.json").write_text(
        json.dumps(
            {"trainer": {"dict_class": "AutoEncoder", "activation_dim": 8, "dict_size": 24}, "buffer": {}}
        )
    )
    sae = SAE.load(tmp_path)
    x = torch.randn(4, 8)
    codes = ((x - state["bias"]) @ state["encoder.weight"].T + state["encoder.bias"]).relu()
    torch.testing.assert_close(sae.encode(x), codes)
    torch.testing.assert_close(sae(x), codes @ state["decoder.weight"].T + state["bias"])


def test_bad_files_get_clear_errors(tmp_path: Path) -> None:
    sae = perturbed(SAEConfig(d_in=12, d_sae=40, architecture="topk", arch=TopKConfig(k=5)))
    sae.save(tmp_path / "ok")
    with pytest.raises(SAEFormatError, match="no SAE at"):
        SAE.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SAEFormatError, match="holds no SAE this reader knows"):
        SAE.load(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "cfg.json").write_text((tmp_path / "ok" / "cfg.json").read_text())
    (broken / "sae_weights.safetensors").write_bytes(
        (tmp_path / "ok" / "sae_weights.safetensors").read_bytes()[:300]
    )
    with pytest.raises(SAEFormatError, match="truncated or corrupt"):
        SAE.load(broken)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    cfg = json.loads((tmp_path / "ok" / "cfg.json").read_text())
    cfg["rama"]["d_sae"] = 41
    (wrong / "cfg.json").write_text(json.dumps(cfg))
    (wrong / "sae_weights.safetensors").write_bytes(
        (tmp_path / "ok" / "sae_weights.safetensors").read_bytes()
    )
    with pytest.raises(SAEFormatError, match=r"W_enc has shape \(12, 40\), expected \(12, 41\)"):
        SAE.load(wrong)
    cfg = json.loads((tmp_path / "ok" / "cfg.json").read_text())
    del cfg["rama"]
    cfg["architecture"] = "matryoshka-mystery"
    (wrong / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SAEFormatError, match="unknown SAELens architecture 'matryoshka-mystery'"):
        SAE.load(wrong)


def test_saving_over_a_folder_keeps_nothing_half_written(tmp_path: Path) -> None:
    sae = perturbed(SAEConfig(d_in=12, d_sae=40, architecture="topk", arch=TopKConfig(k=5)))
    sae.save(tmp_path / "s")
    (tmp_path / "s" / "notes.txt").write_text("kept")
    sae.save(tmp_path / "s")
    assert (tmp_path / "s" / "notes.txt").read_text() == "kept"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
