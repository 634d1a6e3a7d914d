"""The `rama` command, run as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rama
from cli_helpers import rama_cli


def test_version_and_help_with_examples() -> None:
    assert rama_cli("--version").stdout.strip() == f"rama {rama.__version__}"
    for command in ("sites", "run", "demo"):
        result = rama_cli(command, "--help")
        assert result.returncode == 0 and "example: rama" in result.stdout


@pytest.mark.slow
def test_sites_lists_every_site(smollm: object) -> None:
    result = rama_cli("sites", "smollm2-135m", "--layer", "3")
    lines = result.stdout.splitlines()
    assert "blocks.3.attn.hook_pattern" in lines and "blocks.4.hook_resid_pre" not in lines


@pytest.mark.slow
def test_run_prints_shapes_norms_and_next_tokens(smollm: object) -> None:
    result = rama_cli("run", "smollm2-135m", "The capital of France is", "--site", "blocks.0.attn.hook_q")
    assert result.returncode == 0, result.stderr
    assert "blocks.0.attn.hook_q" in result.stdout and "(1, 5, 9, 64)" in result.stdout
    assert "' Paris'" in result.stdout


def test_bad_site_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    result = rama_cli("run", str(tmp_path / "missing"), "hi")
    assert (
        result.returncode == 1
        and result.stderr.startswith("rama: error:")
        and "Traceback" not in result.stderr
    )


@pytest.mark.slow
def test_demo_writes_its_figure_and_summary(tmp_path: Path, smollm: object) -> None:
    result = rama_cli(
        "demo", "--batches", "1", "--batch-size", "2", "--out", str(tmp_path),
        "--sae-tokens", "8192", "--sae-eval-tokens", "1024",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert " Berlin" in summary["completion"] and summary["tokens"] == 256
    assert len(summary["residual_norms"]["position_0"]) == 30 and summary["top_induction_heads"]
    assert max(summary["top_induction_heads"].values()) > 0.5  # SmolLM2 has strong induction heads
    assert (tmp_path / "overview.png").stat().st_size > 20_000
    assert summary["sae"]["metrics"]["l0"] == pytest.approx(16, abs=0.5)
    assert (tmp_path / "sae" / "sae_weights.safetensors").exists() and "latent" in result.stdout
