"""`rama sae train` and `rama sae eval` as a user runs them, on SmolLM2 with a small budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import rama_in_process

pytestmark = pytest.mark.slow
KEYS = {
    "fvu",
    "mse",
    "l0",
    "dead_fraction",
    "ce_loss_clean",
    "ce_loss_spliced",
    "ce_loss_ablated",
    "ce_loss_recovered",
    "kl_spliced",
    "tokens",
    "tokens_per_s",
}


def test_train_writes_an_saelens_folder_with_metrics_then_refuses_to_overwrite(
    tmp_path: Path, smollm: object
) -> None:
    out = tmp_path / "sae"
    args = [
        "sae",
        "train",
        "--site",
        "blocks.3.hook_resid_post",
        "--arch",
        "topk",
        "--width",
        "512",
        "--k",
        "16",
        "--tokens",
        "20480",
        "--harvest-tokens",
        "30720",
        "--batch-size",
        "1024",
        "--eval-tokens",
        "2048",
        "--out",
        str(out),
    ]
    result = rama_in_process(*args)  # in-process: the subprocess start-up is covered elsewhere
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= KEYS
    assert metrics["l0"] == pytest.approx(16, abs=0.5) and metrics["fvu"] < 0.8
    assert 0.3 < metrics["ce_loss_recovered"] <= 1.0
    files = {p.name for p in out.iterdir()}
    assert {"cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "metrics.jsonl"} <= files
    assert "checkpoint" not in files  # a finished run leaves no checkpoint behind
    again = rama_in_process(*args)
    assert again.returncode == 1 and "already holds a trained SAE" in again.stderr
    evaluated = rama_in_process("sae", "eval", str(out), "--eval-tokens", "2048")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "ce_loss_recovered" in evaluated.stdout


def test_eval_refuses_an_sae_of_the_wrong_width(tmp_path: Path, smollm: object) -> None:
    from rama.sae import SAE, SAEConfig

    SAE.create(
        SAEConfig(
            d_in=100,
            d_sae=200,
            architecture="topk",
            k=4,
            model_name="smollm2-135m",
            hook_name="blocks.0.hook_resid_post",
        )
    ).save(tmp_path / "s")
    result = rama_in_process("sae", "eval", str(tmp_path / "s"))
    assert result.returncode == 1 and "d_in=100" in result.stderr and "width 576" in result.stderr
    result = rama_in_process("sae", "eval", str(tmp_path / "s"), "--site", "blocks.0.hook_resid_psot")
    assert result.returncode == 1 and "not a site" in result.stderr


def test_train_fills_an_activation_cache_that_the_next_run_reuses(tmp_path: Path, smollm: object) -> None:
    def train(out: str) -> dict[str, float]:
        result = rama_in_process(
            "sae", "train", "--site", "blocks.1.hook_resid_post", "--width", "64", "--k", "4",
            "--tokens", "4096", "--batch-size", "512", "--eval-tokens", "512",
            "--activation-cache", str(tmp_path / "acts"), "--out", str(tmp_path / out),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        return dict(json.loads((tmp_path / out / "metrics.json").read_text()))

    first = train("a")
    manifest = json.loads((tmp_path / "acts" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["sites"] == ["blocks.1.hook_resid_post"]
    assert first["harvested_tokens"] == manifest["tokens"] > 3800  # 4,096 tokens less the BOS positions
    written = (tmp_path / "acts" / "manifest.json").stat().st_mtime_ns
    second = train("b")
    assert (tmp_path / "acts" / "manifest.json").stat().st_mtime_ns == written
    assert second["fvu"] == first["fvu"]  # same activations, same seed: the same SAE


def test_target_l0_option_steers_the_saved_coefficient(tmp_path: Path, smollm: object) -> None:
    out = tmp_path / "gated"
    result = rama_in_process(
        "sae", "train", "--site", "blocks.1.hook_resid_post", "--arch", "gated", "--width", "64",
        "--l1", "0.05", "--target-l0", "4", "--tokens", "8192", "--batch-size", "512",
        "--eval-tokens", "512", "--no-stream", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "train_config.json").read_text())["target_l0"] == 4
    from rama.sae import SAE

    assert SAE.load(out).cfg.l1_coefficient > 0.05  # 64 latents start far above L0 4: it rose


def test_fewer_harvested_tokens_train_in_epochs_even_with_the_default_stream(
    tmp_path: Path, smollm: object
) -> None:
    out = tmp_path / "epochs"
    result = rama_in_process(
        "sae", "train", "--site", "blocks.1.hook_resid_post", "--width", "64", "--k", "4",
        "--tokens", "8192", "--harvest-tokens", "2048", "--batch-size", "512", "--eval-tokens", "512",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tokens"] == 8192 and 1900 < metrics["harvested_tokens"] <= 2048  # four epochs


def test_train_refuses_a_missing_device_before_loading_anything(tmp_path: Path) -> None:
    for device, expected in [("tpu", "got 'tpu'"), ("cuda:7", "'cuda:7' is not available")]:
        result = rama_in_process("sae", "train", "--device", device, "--out", str(tmp_path / "s"))
        assert result.returncode != 0 and "--device" in result.stderr and expected in result.stderr
        assert not (tmp_path / "s").exists()
