"""Reproducibility, atomic checkpoints and resume after kill -9, and the folded normalisation."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from rama.sae import fit
from rama.sae.training import geometric_median, lr_factor, mean_square_scale
from rama.toys import FeatureSuite

SCRIPT = """
import sys, torch
from rama.sae import fit
from rama.toys import FeatureSuite
x, _ = FeatureSuite().sample(20_000, torch.Generator().manual_seed(3))
sae = fit(x, architecture="topk", d_sae=256, k=5, batch_size=512, total_tokens=400_000, progress=False,
          checkpoint_dir=sys.argv[1] or None, checkpoint_every=10, seed=7)
torch.save(sae.state_dict(), sys.argv[2])
"""


def run_script(checkpoint: str, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, checkpoint, str(out)], text=True)


def test_same_seed_gives_identical_weights() -> None:
    x, _ = FeatureSuite().sample(8192, torch.Generator().manual_seed(0))
    a = fit(
        x, architecture="topk", d_sae=128, k=4, batch_size=1024, total_tokens=50_000, progress=False, seed=3
    )
    b = fit(
        x, architecture="topk", d_sae=128, k=4, batch_size=1024, total_tokens=50_000, progress=False, seed=3
    )
    c = fit(
        x, architecture="topk", d_sae=128, k=4, batch_size=1024, total_tokens=50_000, progress=False, seed=4
    )
    assert all(torch.equal(a.state_dict()[n], b.state_dict()[n]) for n in a.state_dict())
    assert not torch.equal(a.W_dec, c.W_dec)


def test_killed_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    reference = tmp_path / "reference.pt"
    assert run_script("", reference).wait() == 0
    checkpoints = tmp_path / "run"
    process = run_script(str(checkpoints), tmp_path / "never.pt")
    checkpoint = checkpoints / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let it get further, then kill it at an arbitrary moment
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists() and not (tmp_path / "never.pt").exists()
    resumed = tmp_path / "resumed.pt"
    assert run_script(str(checkpoints), resumed).wait() == 0
    a, b = torch.load(reference, weights_only=True), torch.load(resumed, weights_only=True)
    assert all(torch.equal(a[name], b[name]) for name in a)
    lines = (checkpoints / "metrics.jsonl").read_text().splitlines()
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in lines]
    assert steps == sorted(set(steps))  # no step logged twice after the resume


def test_scale_is_folded_so_the_sae_reads_raw_activations() -> None:
    x, _ = FeatureSuite().sample(8192, torch.Generator().manual_seed(0))
    options = dict(architecture="topk", d_sae=256, k=5, batch_size=1024, total_tokens=60_000, progress=False)
    on_raw = fit(37.0 * x, **options)  # activations far from unit scale
    on_unit = fit(x, **options)
    assert abs(on_raw.cfg.input_scale * 37.0 - mean_square_scale(x)) < 1e-3 * mean_square_scale(x)
    with torch.no_grad():
        torch.testing.assert_close(on_raw.encode(37.0 * x), on_unit.encode(x), rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(on_raw(37.0 * x), 37.0 * on_unit(x), rtol=1e-3, atol=1e-2)


def test_fold_scales_is_exact_for_every_architecture() -> None:
    import copy

    from rama.sae import SAE, SAEConfig
    from rama.sae.training import fold_scales

    x = torch.randn(32, 16)
    for architecture in ("topk", "standard", "jumprelu", "gated"):
        sae = SAE.create(SAEConfig(d_in=16, d_sae=64, architecture=architecture, k=8, skip_connection=True))
        with torch.no_grad():
            for parameter in sae.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
        folded = copy.deepcopy(sae)
        fold_scales(folded, 3.0, 3.0)
        with torch.no_grad():
            torch.testing.assert_close(folded.encode(x), sae.encode(3.0 * x), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(folded(x), sae(3.0 * x) / 3.0, rtol=1e-5, atol=1e-5)


def test_geometric_median_and_schedule_on_hand_cases() -> None:
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])
    median = geometric_median(points, iterations=200)
    assert median.norm() < 1.0  # robust to the outlier, unlike the mean (25.25, 25.25)
    assert lr_factor(0, 100, 0.1, 0.2) == 0.1 and lr_factor(50, 100, 0.1, 0.2) == 1.0
    assert lr_factor(90, 100, 0.1, 0.2) == 0.5
