"""Scaling laws: the fits recover the parameters of points made by the forms themselves, the
recommendation is the cheapest point that reaches the target, the grid trains from one cache and
resumes, and bad grids are refused."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from activation_helpers import jsonl_corpus, tiny_lm
from rama.cli.main import build_parser
from rama.cli.options import from_args
from rama.errors import ConfigError, OutputError
from rama.sae.scaling import (
    ScalingConfig,
    ScalingFits,
    TooFewPointsError,
    UnreachableTargetError,
    fit_scaling_laws,
    joint_form,
    plot_scaling,
    power_form,
    recommend,
    run_grid,
    scaling_report,
)

TRUE_JOINT = [-0.5, 0.26, -0.1, -0.042, -2.5, -0.085]  # Gao's form, a steeper β_n so widths matter here
WIDTHS = [256, 512, 1024, 2048, 4096]
KS = [8, 16, 32, 64]


def toy_records(noise: float = 0.01, seed: int = 0) -> list[dict[str, Any]]:
    """Grid points whose FVU is the joint form times log-normal noise, plus a compute series at k=16."""
    rng = np.random.default_rng(seed)
    records = []
    for n in WIDTHS:
        for k in KS:
            fvu = float(joint_form(TRUE_JOINT, np.array([n]), np.array([k]))[0]) * math.exp(
                noise * rng.normal()
            )
            records.append(
                {
                    "width": n,
                    "k": k,
                    "tokens": 1_000_000,
                    "d_in": 64,
                    "compute": 6.0 * 64 * n * 1e6,
                    "fvu": fvu,
                }
            )
    for tokens in (1e5, 2e5, 4e5):  # below the largest budget: L(C) = exp(2 - 0.2 log C) exactly
        c = 6.0 * 64 * 256 * tokens
        records.append({"width": 256, "k": 16, "tokens": int(tokens), "d_in": 64, "compute": c,
                        "fvu": float(power_form([2.0, -0.2], np.array([c]))[0])})  # fmt: skip
    return records


def test_the_joint_fit_recovers_the_parameters_that_made_the_points() -> None:
    fits = fit_scaling_laws(toy_records())
    assert fits.joint is not None
    got = list(fits.joint.params.values())
    assert got[1:4] == pytest.approx(TRUE_JOINT[1:4], abs=0.03)  # β_k, β_n, γ
    assert fits.joint.rmse_log < 0.015 and fits.joint.r2_log > 0.99
    assert fits.joint.points == len(WIDTHS) * len(KS)
    # each k's latents fit (5 widths, 3 parameters) predicts its points within the noise
    for k, fit in fits.latents.items():
        assert fit.rmse_log < 0.02, k


def test_the_compute_fit_recovers_its_exponent_over_the_frontier() -> None:
    fits = fit_scaling_laws(toy_records(noise=0.0))
    assert fits.compute[16].params["b"] == pytest.approx(-0.2, abs=1e-3)
    assert fits.compute[16].points == 3


def test_recommend_picks_the_cheapest_width_that_reaches_the_target() -> None:
    records = toy_records(noise=0.0)
    fits = fit_scaling_laws(records)
    predicted = {
        (n, k): float(joint_form(TRUE_JOINT, np.array([n]), np.array([k]))[0]) for n in WIDTHS for k in KS
    }
    target = predicted[(1024, 32)] * 1.001  # 1024 latents reach it (with k=32); 512 do not with any k
    assert min(predicted[(512, k)] for k in KS) > target
    pick = recommend(fits, records, target)
    assert (pick.width, pick.k, pick.tokens) == (1024, 32, 1_000_000)
    assert pick.predicted_fvu <= target and not pick.caveats
    beyond = recommend(fits, records, min(predicted.values()) * 0.9)
    assert beyond.width > max(WIDTHS) and any("beyond the grid" in c for c in beyond.caveats)


def test_an_unreachable_target_is_reported_with_the_fits_not_raised() -> None:
    """A grid that ran for an hour still gives its fits when no candidate reaches the target FVU
    (here: below the irreducible term of every k), and says why there is no recommendation."""
    records = toy_records(noise=0.0)
    fits = fit_scaling_laws(records)
    floor = min(float(joint_form(TRUE_JOINT, np.array([10**9]), np.array([k]))[0]) for k in KS)
    with pytest.raises(UnreachableTargetError, match="is predicted to reach FVU"):
        recommend(fits, records, floor * 0.5)
    report = scaling_report(fits, records, floor * 0.5)
    assert fits.joint is not None and report["joint"]["params"] == fits.joint.params
    assert "raise target_fvu or add larger ks" in report["recommendation"]["unreachable"]
    reachable = scaling_report(fits, records, 0.99)
    assert reachable["recommendation"]["width"] == min(WIDTHS)
    json.dumps(report)  # what the CLI prints


def test_too_few_points_and_bad_grids_are_refused() -> None:
    with pytest.raises(TooFewPointsError, match="no grid points"):
        fit_scaling_laws([])
    few = [
        r
        for r in toy_records()
        if r["width"] in (256, 512) and r["k"] in (8, 16) and r["tokens"] == 1_000_000
    ]
    with pytest.raises(TooFewPointsError, match="joint form has 6 parameters"):
        fit_scaling_laws(few)
    with pytest.raises(ConfigError, match="widths must be a non-empty list"):
        ScalingConfig(widths=[])
    with pytest.raises(ConfigError, match="k 64 > width 32"):
        ScalingConfig(widths=[32, 128], ks=[8, 64])
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ConfigError, match="target_fvu must be between 0 and 1"):
            ScalingConfig(target_fvu=bad)


def test_the_cli_options_are_the_config_fields() -> None:
    ns = build_parser().parse_args(
        [
            "sae",
            "scaling",
            "--widths",
            "64,128",
            "--ks",
            "4,8",
            "--tokens",
            "4096,8192",
            "--target-fvu",
            "0.2",
        ]
    )
    parsed = from_args(ScalingConfig, ns)
    assert (parsed.widths, parsed.ks, parsed.tokens, parsed.target_fvu) == (
        [64, 128],
        [4, 8],
        [4096, 8192],
        0.2,
    )
    assert parsed.points() == sorted(
        {(n, k, 8192) for n in (64, 128) for k in (4, 8)} | {(n, 8, 4096) for n in (64, 128)}
    )


@pytest.fixture(scope="module")
def lm(smollm: Any) -> Any:
    return tiny_lm(smollm.tokenizer)


def test_the_grid_trains_from_one_cache_resumes_and_keeps_whole_results(lm: Any, tmp_path: Path) -> None:
    corpus = jsonl_corpus(tmp_path / "docs.jsonl", 300)
    base = {"ks": [4, 8], "tokens": [1024], "batch_size": 128, "context_size": 32, "eval_tokens": 1024,
            "cache": str(tmp_path / "cache"), "out": str(tmp_path / "grid"), "corpus": str(corpus),
            "site": "blocks.1.hook_resid_post"}  # fmt: skip
    first = ScalingConfig(widths=[64], **base)
    records = run_grid(lm, first, progress=False)
    assert [(r["width"], r["k"]) for r in records] == [(64, 4), (64, 8)]
    assert all(0 < r["fvu"] < 1.5 and r["d_in"] == 32 for r in records)
    manifest = (tmp_path / "cache" / "manifest.json").stat().st_mtime_ns
    # a grid point that cannot be written stops the run midway: the finished points stay, whole
    wider = ScalingConfig(widths=[64, 128], **base)
    (tmp_path / "grid").joinpath("n128-k4-t1024").write_text("in the way")
    with pytest.raises(OutputError):
        run_grid(lm, wider, progress=False)
    lines = (tmp_path / "grid" / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["k"] for line in lines] == [4, 8]
    (tmp_path / "grid" / "n128-k4-t1024").unlink()
    records = run_grid(lm, wider, progress=False)
    assert len(records) == 4 and records[:2] == [json.loads(line) for line in lines]
    # done: a rerun trains nothing and the cache was harvested once
    assert run_grid(lm, wider, progress=False) == records
    assert (tmp_path / "cache" / "manifest.json").stat().st_mtime_ns == manifest
    with pytest.raises(TooFewPointsError, match="too few grid points for any form"):
        fit_scaling_laws(records)  # 2 points per k, 4 at the top budget: no form has enough
    figure = plot_scaling(records, ScalingFits(None, {}, {}, []), tmp_path / "scaling.png")
    assert figure.stat().st_size > 10_000
