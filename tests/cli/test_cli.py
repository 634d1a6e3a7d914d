"""The `rama` command, run as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rama
from cli_helpers import rama_cli, rama_in_process
from rama.features import FeatureStore


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
        "--sae-tokens", "8192", "--sae-eval-tokens", "512", "--features-tokens", "2048",
        "--features-compared", "20",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["steps"]) == [
        "completion",
        "residual",
        "previous-token",
        "induction",
        "ioi",
        "sae",
        "features",
    ]
    assert all(step["seconds"] > 0 for step in summary["steps"].values())
    assert summary["total_seconds"] >= sum(step["seconds"] for step in summary["steps"].values())
    assert " Berlin" in summary["completion"]["completion"] and summary["residual"]["tokens"] == 256
    assert len(summary["residual"]["position_0"]) == 30
    assert max(summary["induction"]["top_heads"].values()) > 0.5  # SmolLM2 has strong induction heads
    ioi = summary["ioi"]  # SmolLM2 does IOI: mean logit difference ≈ 5, IO above S nearly always
    assert ioi["logit_difference"] > 2 and ioi["accuracy"] >= 0.9 and len(ioi["name_movers"]) == 3
    assert "strongest name movers" in result.stdout
    assert len(summary["previous-token"]["scores"]) == 30 and len(summary["previous-token"]["scores"][0]) == 9
    assert (tmp_path / "overview.png").stat().st_size > 20_000
    assert summary["sae"]["metrics"]["l0"] == pytest.approx(16, abs=0.5)
    assert (tmp_path / "sae" / "sae_weights.safetensors").exists() and "latent" in result.stdout
    assert "time:" in result.stdout and "budget 300 s" in result.stdout
    features = summary["features"]["summary"]
    assert features["latent"]["total"] == 2048 and features["neuron"]["total"] == 1536
    assert (
        0 < features["latent"]["concentration_median"] <= 1 and features["latent"]["coherence_measured"] > 0
    )
    assert f"rama serve {tmp_path / 'features.db'}" in result.stdout
    with FeatureStore(tmp_path / "features.db") as store:
        assert store.meta["d_sae"] == 2048


@pytest.mark.slow
def test_demo_runs_only_the_steps_asked_for(tmp_path: Path, smollm: object) -> None:
    result = rama_in_process("demo", "--steps", "induction,completion", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["steps"]) == ["completion", "induction"]  # the demo's order, not the option's
    assert "residual" not in summary and (tmp_path / "overview.png").is_file()


def test_demo_steps_are_plug_ins(tmp_path: Path) -> None:
    """A step defined here joins the demo: its numbers and time go to summary.json, its panel to the figure."""
    from rama.cli.demo import DemoConfig, DemoContext, DemoStep, run_demo
    from rama.toys import pretrained

    def count_layers(context: DemoContext) -> dict[str, object]:
        return {"layers": context.model.cfg.n_layers, "out": str(context.out)}

    def reuse(context: DemoContext) -> dict[str, object]:
        return {"twice": 2 * context.results["layers"]["layers"]}  # an earlier step's numbers

    def draw(axis: object, numbers: dict[str, object]) -> None:
        axis.bar(["layers"], [numbers["twice"]])  # type: ignore[attr-defined]

    steps = (DemoStep("layers", "Layers", count_layers), DemoStep("twice", "Twice the layers", reuse, draw))
    config = DemoConfig(model=str(pretrained("ioi")), out=str(tmp_path / "demo"), steps="")
    assert run_demo(config, steps) == 0
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["layers"] == {"layers": 3, "out": str(tmp_path / "demo")} and summary["twice"] == {
        "twice": 6
    }
    assert (
        summary["steps"]["twice"]["title"] == "Twice the layers"
        and summary["steps"]["layers"]["seconds"] >= 0
    )
    assert (tmp_path / "demo" / "overview.png").stat().st_size > 5_000
    only = DemoConfig(model=str(pretrained("ioi")), out=str(tmp_path / "only"), steps="layers")
    assert run_demo(only, steps) == 0
    assert not (tmp_path / "only" / "overview.png").exists()  # no step that draws: no figure
    assert not [p for p in (tmp_path / "demo").iterdir() if p.name.startswith(".")]  # nothing half-written


def test_unknown_demo_steps_are_refused_with_the_known_ones() -> None:
    result = rama_in_process("demo", "--steps", "completion,circuits", "--model", "/nonexistent")
    assert result.returncode == 1
    assert (
        "unknown demo step(s) circuits; the steps are: completion, residual, previous-token" in result.stderr
    )
