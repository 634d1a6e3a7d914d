"""`rama sae train` and `rama sae eval` as a user runs them, on SmolLM2 with a small budget; and the
option vocabulary and the checks that run before any model loads (fast, no model)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from cli_helpers import rama_in_process
from rama.cli.main import parse
from rama.cli.sae import SAERunOptions, train_config_from_args
from rama.sae import SAE, GatedConfig, L1Config, MatryoshkaConfig, TopKConfig, TrainConfig, train

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


@pytest.mark.slow
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
        "1024",
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
    evaluated = rama_in_process("sae", "eval", str(out), "--eval-tokens", "1024")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "ce_loss_recovered" in evaluated.stdout


@pytest.mark.slow
def test_eval_refuses_an_sae_of_the_wrong_width(tmp_path: Path, smollm: object) -> None:
    from rama.sae import SAE, SAEConfig

    SAE.create(
        SAEConfig(
            d_in=100,
            d_sae=200,
            architecture="topk",
            arch=TopKConfig(k=4),
            model_name="smollm2-135m",
            hook_name="blocks.0.hook_resid_post",
        )
    ).save(tmp_path / "s")
    result = rama_in_process("sae", "eval", str(tmp_path / "s"))
    assert result.returncode == 1 and "d_in=100" in result.stderr and "width 576" in result.stderr
    result = rama_in_process("sae", "eval", str(tmp_path / "s"), "--site", "blocks.0.hook_resid_psot")
    assert result.returncode == 1 and "not a site" in result.stderr


@pytest.mark.slow
def test_train_fills_an_activation_cache_that_the_next_run_reuses(tmp_path: Path, smollm: object) -> None:
    def train(out: str, eval_tokens: str = "512") -> dict[str, float]:
        result = rama_in_process(
            "sae", "train", "--site", "blocks.1.hook_resid_post", "--width", "64", "--k", "4",
            "--tokens", "4096", "--batch-size", "512", "--eval-tokens", eval_tokens,
            "--activation-cache", str(tmp_path / "acts"), "--out", str(tmp_path / out),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        return dict(json.loads((tmp_path / out / "metrics.json").read_text()))

    first = train("a")
    manifest = json.loads((tmp_path / "acts" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["sites"] == ["blocks.1.hook_resid_post"]
    assert first["harvested_tokens"] == manifest["tokens"] > 3800  # 4,096 tokens less the BOS positions
    written = (tmp_path / "acts" / "manifest.json").stat().st_mtime_ns
    second = train("b", eval_tokens="0")  # no held-out evaluation now: `rama sae eval` runs it later
    assert (tmp_path / "acts" / "manifest.json").stat().st_mtime_ns == written
    assert "fvu" not in second and second["harvested_tokens"] == first["harvested_tokens"]
    later = rama_in_process("sae", "eval", str(tmp_path / "b"), "--eval-tokens", "512")
    assert later.returncode == 0, later.stderr[-2000:]
    fvu = next(line.split()[1] for line in later.stdout.splitlines() if line.startswith("fvu "))
    assert fvu == f"{first['fvu']:.4f}"  # same activations, same seed: the same SAE


@pytest.mark.slow
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

    arch = SAE.load(out).cfg.arch
    assert (
        isinstance(arch, L1Config) and arch.l1_coefficient > 0.05
    )  # 64 latents start far above L0 4: it rose


@pytest.mark.slow
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


def config_of(*args: str) -> TrainConfig:
    return train_config_from_args(parse(["sae", "train", *args]))


def test_an_old_command_line_parses_to_the_same_config_as_the_new_names() -> None:
    old = config_of(
        "--arch", "topk", "--width", "512", "--k", "16", "--tokens", "20480", "--batch-size", "1024", "--skip"
    )
    new = config_of(
        "--architecture", "topk", "--d-sae", "512", "--k", "16", "--total-tokens", "20480",
        "--batch-size", "1024", "--skip-connection",
    )  # fmt: skip
    expected = TrainConfig.create(
        architecture="topk", d_sae=512, k=16, total_tokens=20_480, batch_size=1024, skip_connection=True
    )
    assert old == new == expected and expected.arch == TopKConfig(k=16)
    assert config_of("--arch", "gated", "--l1", "0.5").arch == GatedConfig(l1_coefficient=0.5)
    widths = config_of("--arch", "matryoshka", "--width", "4608", "--matryoshka-widths", "72,288,1152,4608")
    assert widths.arch == MatryoshkaConfig(matryoshka_widths=[72, 288, 1152, 4608])


def test_the_cli_and_the_library_share_their_defaults() -> None:
    assert (
        config_of() == TrainConfig()
        and TrainConfig().d_sae == 4608
        and TrainConfig().arch == TopKConfig(k=32)
    )
    library = inspect.signature(train).parameters  # where the activations come from: one default too
    run_defaults = {f.name: f.default for f in dataclasses.fields(SAERunOptions)}
    for name in ("stream", "eval_tokens", "activation_cache", "corpus"):
        assert library[name].default == run_defaults[name], name


BAD_SETTINGS: list[tuple[list[str], str]] = [
    (["--arch", "bogus"], "unknown SAE architecture 'bogus'; known: batchtopk, gated, jumprelu, matryoshka"),
    (["--width", "0"], "d_sae must be a positive integer; got 0"),
    (["--k", "0"], "k must be an integer with 0 < k <= d_sae (4608); got k=0"),
    (["--width", "64", "--k", "65"], "0 < k <= d_sae (64); got k=65"),
    (["--arch", "standard"], "needs l1_coefficient > 0"),
    (["--arch", "jumprelu"], "needs l0_coefficient > 0"),
    (["--arch", "gated", "--l1", "-1"], "l1_coefficient must be >= 0"),
    (["--lr", "0"], "lr must be > 0"),
    (["--lr", "-0.001"], "lr must be > 0"),
    (["--batch-size", "0"], "batch_size must be a positive integer; got 0"),
    (["--tokens", "-5"], "total_tokens must be at least one batch (batch_size 4,096); got -5"),
    (["--tokens", "100"], "total_tokens must be at least one batch (batch_size 4,096); got 100"),
    (["--eval-tokens", "-1"], "--eval-tokens must be a number of held-out tokens (0 skips the evaluation); got -1"),
    (["--harvest-tokens", "10"], "--harvest-tokens must be at least one batch"),
    (["--arch", "standard", "--l1", "1", "--k", "4"], "--k: not a setting of the 'standard' architecture"),
    (["--matryoshka-widths", "8,4608"], "--matryoshka-widths: not a setting of the 'topk' architecture"),
    (["--arch", "matryoshka", "--matryoshka-widths", "72,4096"], "must increase strictly from above 0 and end at d_sae (4608)"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), BAD_SETTINGS, ids=[" ".join(a) for a, _ in BAD_SETTINGS])
def test_a_bad_setting_is_one_line_before_the_model_loads(
    args: list[str], message: str, tmp_path: Path
) -> None:
    start = time.perf_counter()
    # a model that does not exist: were it loaded first, its error would come instead of the setting's
    result = rama_in_process("sae", "train", "--model", "no/such-model", *args, "--out", str(tmp_path / "s"))
    assert time.perf_counter() - start < 1.0
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_ctrl_c_leaves_a_checkpoint_that_the_same_command_resumes(
    tmp_path: Path, smollm: object, monkeypatch: Any
) -> None:
    from rama.sae import training

    out = tmp_path / "sae"
    args = [
        "sae", "train", "--site", "blocks.1.hook_resid_post", "--width", "64", "--k", "4", "--tokens", "8192",
        "--batch-size", "512", "--checkpoint-every", "4", "--eval-tokens", "512", "--no-stream", "--out", str(out),
    ]  # fmt: skip
    real_step = training.train_step

    def interrupted_at_step_10(run: Any, *rest: Any) -> Any:
        if run.state.step == 10:  # as if the user pressed Ctrl-C during the eleventh step
            raise KeyboardInterrupt
        return real_step(run, *rest)

    monkeypatch.setattr(training, "train_step", interrupted_at_step_10)
    result = rama_in_process(*args)
    assert result.returncode == 130 and result.stderr.strip().endswith(
        "interrupted; resume with the same command"
    )
    assert [p.name for p in (out / "checkpoint").iterdir() if p.name.startswith(".")] == []  # no staging file
    import torch

    assert torch.load(out / "checkpoint" / "checkpoint.pt", weights_only=True)["step"] == 8
    monkeypatch.setattr(training, "train_step", real_step)
    changed = rama_in_process(*[a if a != "4" else "8" for a in args])  # --k 8: another run
    assert changed.returncode == 1 and "k=4, this run asks k=8" in changed.stderr
    resumed = rama_in_process(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["tokens"] == 8192


def test_several_sites_train_one_sae_each_into_subfolders(tmp_path: Path) -> None:
    import transformers as tf

    from features.feature_helpers import word_tokenizer
    from tiny_models import CONFIGS

    config = CONFIGS["llama"]()
    config.max_position_embeddings = 128  # the CLI harvests contexts of 128 tokens
    torch.manual_seed(0)
    tf.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "model")
    word_tokenizer().save_pretrained(tmp_path / "model")
    words = [" ".join(f"w{3 + (7 * i + j) % 94}" for j in range(3000)) for i in range(30)]
    (tmp_path / "words.jsonl").write_text("".join(json.dumps({"text": w}) + "\n" for w in words))
    sites = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    args = ["sae", "train", "--model", str(tmp_path / "model"), "--site", ",".join(sites), "--corpus",
            str(tmp_path / "words.jsonl"), "--d-sae", "48", "--k", "4", "--batch-size", "32", "--total-tokens",
            "640", "--harvest-tokens", "640", "--eval-tokens", "128", "--no-progress", "--out", str(tmp_path / "out")]  # fmt: skip
    result = rama_in_process(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == sites
    for site in sites:
        assert SAE.load(tmp_path / "out" / site).cfg.hook_name == site
        assert f"wrote {tmp_path / 'out' / site / 'metrics.json'}" in result.stdout


def test_site_lists_are_checked_before_the_model_loads(tmp_path: Path) -> None:
    out = str(tmp_path / "s")
    for args, expected in [
        (["--site", "a,a"], "distinct comma-separated sites"),
        (["--site", "a,b", "--site-out", "c"], "give it one --site"),
        (["--distribute-sites", "--parallel", "latents"], "--parallel data only"),
    ]:
        result = rama_in_process("sae", "train", *args, "--out", out)
        assert result.returncode != 0 and expected in result.stderr, result.stderr
        assert not (tmp_path / "s").exists()
