"""`rama steer`, `rama steer sweep` and `rama steer export`, run as a user runs them, on the IOI toy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import rama
from cli_helpers import rama_cli, rama_in_process
from rama.interventions import add_vector
from rama.interventions.steering import relative_vector, typical_norm
from rama.toys import pretrained

TOY = str(pretrained("ioi"))
SITE = "blocks.2.hook_resid_post"
PROMPT = "When Mary and John went to the store , John gave a drink to"


def towards(name: str, tmp_path: Path) -> Path:
    model = rama.load(TOY)
    path = tmp_path / f"{name}.pt"
    torch.save(model.W_U[:, model.tokenizer.convert_tokens_to_ids(name)].detach().clone(), path)
    return path


def test_steer_prints_both_generations(tmp_path: Path) -> None:
    vector = towards("John", tmp_path)
    result = rama_cli("steer", "--model", TOY, "--site", SITE, "--vector", str(vector), "--strength", "20",
                      "--scale", "raw", "--max-new-tokens", "1", PROMPT)  # fmt: skip
    assert result.returncode == 0, result.stderr
    plain, steered = result.stdout.split(
        "steered (add 20 at blocks.2.hook_resid_post; strength 1 = the vector"
    )
    assert plain.strip().endswith("to Mary") and steered.strip().endswith("to John")
    relative = rama_in_process("steer", "--model", TOY, "--site", SITE, "--vector", str(vector), "--strength", "1",
                               "--max-new-tokens", "1", PROMPT)  # fmt: skip
    assert relative.returncode == 0, relative.stderr
    unit = typical_norm(rama.load(TOY), SITE)
    assert f"strength 1 = norm {unit:.1f}, the typical residual norm at {SITE}" in relative.stdout
    contrast = rama_in_process("steer", "--model", TOY, "--site", "blocks.1.hook_resid_post", "--contrast",
                        "When Mary and John", "When Mary and Mary", "--max-new-tokens", "1", PROMPT)  # fmt: skip
    assert contrast.returncode == 0 and "unsteered:" in contrast.stdout, contrast.stderr


def test_sweep_measures_concept_rate_and_perplexity(tmp_path: Path) -> None:
    vector = towards("John", tmp_path)
    out = tmp_path / "sweep"
    result = rama_in_process("steer", "sweep", "--model", TOY, "--site", SITE, "--vector", str(vector),
                      "--prompts", PROMPT, "--prompts", PROMPT.replace("Mary", "Kate"), "--strengths", "0,2",
                      "--keywords", "John", "--max-new-tokens", "1", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert [p["strength"] for p in points] == [0.0, 2.0]
    assert points[0]["concept_rate"] == 0.0 and points[1]["concept_rate"] == 1.0
    assert points[1]["perplexity"] > points[0]["perplexity"]  # John is unlikely to the unsteered model
    assert (out / "sweep.png").stat().st_size > 10_000


def test_export_writes_a_model_plain_transformers_runs_steered(tmp_path: Path) -> None:
    vector = towards("John", tmp_path)
    out = tmp_path / "steered"
    result = rama_in_process("steer", "export", "--model", TOY, "--site", SITE, "--vector", str(vector),
                      "--strength", "0.5", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    plain = AutoModelForCausalLM.from_pretrained(out).eval()
    model = rama.load(TOY)
    tokens = model.to_tokens(PROMPT)
    hook = add_vector(model, SITE, relative_vector(model, SITE, torch.load(vector), 0.5), 1.0)
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=tokens).logits, model.run_with_hooks(tokens, [hook]))


def test_bad_steering_commands_are_clear(tmp_path: Path) -> None:
    result = rama_in_process("steer", "--model", TOY, "--site", SITE, PROMPT)
    assert result.returncode == 1 and "exactly one steering source" in result.stderr
    vector = towards("John", tmp_path)
    result = rama_cli("steer", "export", "--model", TOY, "--site", SITE, "--vector", str(vector), "--mode",
                      "clamp", "--out", str(tmp_path / "x"))  # fmt: skip
    assert result.returncode == 2 and "unrecognized arguments: --mode clamp" in result.stderr  # not --model
    bad = tmp_path / "short.pt"
    torch.save(torch.ones(10), bad)
    result = rama_in_process("steer", "--model", TOY, "--site", SITE, "--vector", str(bad), PROMPT)
    assert result.returncode == 1 and "must have shape (64,)" in result.stderr
    helped = rama_cli("steer", "--help")
    assert (
        helped.returncode == 0
        and "example: rama steer" in helped.stdout
        and "steer sweep --help" in helped.stdout
        and all(option in helped.stdout for option in ("--sae", "--feature", "--contrast", "--strength"))
    )
    sweep_help = rama_cli("steer", "sweep", "--help")
    assert sweep_help.returncode == 0 and "--keywords" in sweep_help.stdout


def test_steer_with_an_sae_feature(tmp_path: Path) -> None:
    from rama.sae.base import SAE, SAEConfig
    from rama.sae.topk import TopKConfig

    torch.manual_seed(0)
    sae = SAE.create(
        SAEConfig(
            d_in=64, d_sae=128, architecture="topk", arch=TopKConfig(k=8), hook_name=SITE, model_name=TOY
        )
    )
    john = rama.load(TOY).W_U[:, 19].detach()  # any direction; make latent 5's decoder row point along it
    with torch.no_grad():
        sae.W_dec[5] = john / john.norm()
    sae.save(tmp_path / "sae")
    result = rama_in_process("steer", "--model", TOY, "--sae", str(tmp_path / "sae"), "--feature", "5", "--mode", "clamp",
                      "--strength", "30", "--max-new-tokens", "1", PROMPT)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"steered (clamp 30 at {SITE})" in result.stdout  # the SAE's own site is the default
    bad = rama_in_process("steer", "--model", TOY, "--sae", str(tmp_path / "sae"), "--feature", "500", PROMPT)
    assert bad.returncode == 1 and "outside this SAE's 128 latents" in bad.stderr


def test_user_mistakes_are_one_line_errors_before_the_model_loads(tmp_path: Path) -> None:
    vector = towards("John", tmp_path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(vector.read_bytes()[:100])
    result = rama_cli("steer", "--model", TOY, "--site", SITE, "--vector", str(truncated), PROMPT)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"rama: error: cannot read the steering vector file '{truncated}'")
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a tensor at all")
    result = rama_in_process("steer", "--model", TOY, "--site", SITE, "--vector", str(garbage), PROMPT)
    assert result.returncode == 1 and str(garbage) in result.stderr
    missing = "/nonexistent/model"  # the model is never loaded: the mistakes are found first
    for words, message in (
        (("--vector", str(vector), "  "), "give a prompt"),
        (("--vector", str(vector), "--mode", "clamp", PROMPT), "--mode clamp needs --strength"),
        (("--vector", str(vector), "--mode", "nudge", PROMPT), "--mode must be one of add, clamp"),
        (("--contrast", "", "The meeting", PROMPT), "two non-empty prompts"),
    ):
        result = rama_in_process("steer", "--model", missing, "--site", SITE, *words)
        assert result.returncode == 1 and message in result.stderr, (words, result.stderr)


def test_a_strength_that_overflows_is_an_error_not_empty_text(tmp_path: Path) -> None:
    vector = towards("John", tmp_path)
    result = rama_cli(
        "steer", "--model", TOY, "--site", SITE, "--vector", str(vector), "--strength", "1e20", PROMPT
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "NaN or inf" in result.stderr and "lower the strength" in result.stderr
    result = rama_in_process("steer", "sweep", "--model", TOY, "--site", SITE, "--vector", str(vector),
                             "--prompts", PROMPT, "--strengths", "0,1e20", "--keywords", "John", "--max-new-tokens", "1",
                             "--out", str(tmp_path / "sweep"))  # fmt: skip
    assert result.returncode == 1 and "NaN or inf" in result.stderr


def test_export_lists_only_what_it_uses_and_clears_a_killed_runs_staging(tmp_path: Path) -> None:
    helped = rama_cli("steer", "export", "--help").stdout
    assert "--strength" in helped and "--out" in helped and "--vector" in helped
    assert not re.search(r"--mode\b", helped) and "--max-new-tokens" not in helped  # refused / ignored
    sweep = rama_cli("steer", "sweep", "--help").stdout
    assert "--strengths" in sweep and not re.search(
        r"--strength\b(?!s)", sweep
    )  # a sweep reads --strengths only
    vector = towards("John", tmp_path)
    stale = tmp_path / ".steered.k1lled0x"  # what a killed export leaves beside its target
    (stale / "part").mkdir(parents=True)
    (stale / "part" / "model.safetensors").write_bytes(b"half")
    result = rama_in_process("steer", "export", "--model", TOY, "--site", SITE, "--vector", str(vector),
                             "--out", str(tmp_path / "steered"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not stale.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["John.pt", "steered"]
    again = rama_in_process("steer", "export", "--model", "/nonexistent", "--site", SITE, "--vector", str(vector),
                            "--out", str(tmp_path / "steered"))  # fmt: skip
    assert again.returncode == 1 and "already holds files" in again.stderr  # refused before loading


@pytest.mark.slow
def test_readme_sea_command_steers_smollm2_to_the_sea(smollm: object) -> None:
    """The README's command, word for word but for the strength on the documented relative scale."""
    result = rama_in_process("steer", "--site", "blocks.12.hook_resid_post", "--contrast",
                             "The ship sailed on the sea", "The meeting starts at nine", "--strength", "0.25",
                             "Let me describe myself. I am")  # fmt: skip
    assert result.returncode == 0, result.stderr
    plain, steered = result.stdout.split("steered (add 0.25 at blocks.12.hook_resid_post; strength 1 = norm ")
    assert "sea" not in plain and "sail" not in plain
    assert (
        "sea" in steered and "sail" in steered
    )  # measured: "a man of the sea, a sailor's tale. I have sailed…"
    assert "raw vector norm" in steered and ", we, we" not in steered
