"""Reproducibility, atomic checkpoints and resume after kill -9, and the folded normalisation."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rama.sae import fit
from rama.sae.training import check_device, geometric_median, lr_factor, mean_square_scale
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

    from rama.sae import SAE, SAEConfig, arch_config
    from rama.sae.training import fold_scales

    x = torch.randn(32, 16)
    for architecture in ("topk", "standard", "jumprelu", "gated"):
        settings = {"k": 8} if architecture == "topk" else {}
        arch = arch_config(architecture, **settings)
        sae = SAE.create(
            SAEConfig(d_in=16, d_sae=64, architecture=architecture, arch=arch, skip_connection=True)
        )
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


def test_the_target_l0_controller_moves_the_coefficient_by_hand_computed_factors() -> None:
    from rama.sae.base import TrainState
    from rama.sae.training import steer_coefficient

    state = TrainState()
    steer_coefficient(state, l0=64.0, target=32.0, rate=0.05)  # twice the target: log 2 · 0.05 up
    assert state.coefficient_multiplier == pytest.approx(2**0.05)
    steer_coefficient(state, l0=16.0, target=32.0, rate=0.05)  # half: back down by the same factor
    assert state.coefficient_multiplier == pytest.approx(1.0)
    steer_coefficient(state, l0=5000.0, target=32.0, rate=0.05)  # a huge miss is clipped at e^rate
    assert state.coefficient_multiplier == pytest.approx(math.exp(0.05))
    state.step, state.total_steps = 0, 100  # the multiplier scales the warmed-up coefficient
    assert state.sparsity_scale() == pytest.approx(math.exp(0.05) / 5)


@pytest.mark.parametrize(
    ("architecture", "start"),
    [
        ("standard", {"l1_coefficient": 0.05}),
        ("gated", {"l1_coefficient": 0.05}),
        ("jumprelu", {"l0_coefficient": 0.01}),
    ],
)
def test_target_l0_reaches_the_asked_sparsity_from_a_wrong_coefficient(
    architecture: str, start: dict[str, float]
) -> None:
    suite = FeatureSuite()
    train, _ = suite.sample(30_000, torch.Generator().manual_seed(2))
    held_out, _ = suite.sample(2_000, torch.Generator().manual_seed(3))
    common = dict(
        architecture=architecture, d_sae=512, batch_size=1024, total_tokens=300_000, lr=1e-3, progress=False
    )
    free = fit(train, **common, **start)
    steered = fit(train, **common, **start, target_l0=8.0)
    with torch.no_grad():
        free_l0 = float((free.encode(held_out) > 0).sum(-1).float().mean())
        steered_l0 = float((steered.encode(held_out) > 0).sum(-1).float().mean())
    assert free_l0 > 16  # the starting coefficient alone is far too weak for L0 8
    assert 0.65 * 8 <= steered_l0 <= 1.35 * 8  # within a third: the penalty acts with a lag
    name = next(iter(start))
    assert (
        getattr(steered.cfg.arch, name) > 3 * start[name]
    )  # the saved cfg holds the coefficient it ended at


def test_jumprelu_target_penalty_is_the_squared_miss_and_pushes_back_below_the_target() -> None:
    from rama.sae.jumprelu import l0_penalty

    l0 = torch.tensor([64.0, 32.0, 16.0], requires_grad=True)
    penalty = l0_penalty(l0, 32.0)
    assert penalty.tolist() == pytest.approx([16.0, 0.0, 4.0])  # 32/2 · (2−1)², 0, 16 · (½−1)²
    penalty.sum().backward()
    assert l0.grad is not None
    assert l0.grad.tolist() == pytest.approx([1.0, 0.0, -0.5])  # slope 1 at 2× target, negative below
    plain = torch.tensor(5.0)
    assert l0_penalty(plain, None) is plain  # no target: the published linear L0 penalty


def test_target_l0_needs_a_penalty_architecture() -> None:
    x = torch.randn(2048, 8)
    with pytest.raises(ValueError, match="set its k instead"):
        fit(x, architecture="topk", d_sae=16, k=2, target_l0=4.0, batch_size=512, progress=False)


def test_the_coefficient_multiplier_survives_a_checkpoint(tmp_path: Path) -> None:
    from rama.sae.training import TensorBatches, TrainConfig, init_run, load_checkpoint, save_checkpoint

    x = torch.randn(4096, 8)
    config = TrainConfig.create(
        architecture="jumprelu", d_sae=16, l0_coefficient=0.1, target_l0=2.0, total_tokens=4096
    )
    data = TensorBatches(x, None, 1024, 0)
    run = init_run(config, data, {})
    run.state.coefficient_multiplier = 7.25
    save_checkpoint(run, tmp_path / "checkpoint.pt", {})
    resumed = init_run(config, data, {})
    load_checkpoint(resumed, tmp_path / "checkpoint.pt", {})
    assert resumed.state.coefficient_multiplier == 7.25


def test_a_device_that_is_not_there_is_refused_by_name() -> None:
    x, _ = FeatureSuite().sample(2048, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"'cpu', 'cuda' or 'cuda:N'; got 'tpu'"):
        fit(x, d_sae=64, k=4, batch_size=512, total_tokens=2048, progress=False, device="tpu")
    with pytest.raises(ValueError, match=r"'cuda:99' is not available: this machine has \d+ CUDA device"):
        fit(x, d_sae=64, k=4, batch_size=512, total_tokens=2048, progress=False, device="cuda:99")
    assert check_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")
@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "matryoshka", "jumprelu"])
def test_training_on_cuda_matches_the_cpu_run(architecture: str) -> None:
    """Same seed, same batches: a few GPU steps land where the CPU's do, and a longer run reaches the
    same reconstruction (top-k choices may flip on float rounding, so weights drift apart slowly)."""
    x, _ = FeatureSuite().sample(16_384, torch.Generator().manual_seed(1))
    options = dict(architecture=architecture, d_sae=256, k=5, batch_size=1024)
    if architecture == "jumprelu":
        options |= dict(k=None, l0_coefficient=1e-3)
    short = dict(options, total_tokens=4 * 1024, progress=False, seed=5)
    cpu, gpu = fit(x, **short), fit(x.cuda(), device="cuda", **short)  # type: ignore[arg-type]
    assert gpu.W_dec.device.type == "cuda"
    for name, value in cpu.state_dict().items():  # Adam turns rounding in ~0 gradients into ±lr steps
        far = (gpu.state_dict()[name].cpu() - value).abs() > 1e-4 * (1 + value.abs())
        assert far.float().mean() < 0.01, f"{name}: {int(far.sum())} of {far.numel()} entries differ"
    long = dict(options, total_tokens=60_000, progress=False, seed=5)
    cpu, gpu = fit(x, **long), fit(x.cuda(), device="cuda", **long)  # type: ignore[arg-type]
    with torch.no_grad():
        fvu_cpu = (cpu(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
        fvu_gpu = ((gpu(x.cuda()) - x.cuda()).pow(2).sum() / (x - x.mean(0)).pow(2).sum().cuda()).cpu()
    assert abs(float(fvu_cpu) - float(fvu_gpu)) < 0.01 * float(fvu_cpu) + 1e-3


def small_run(tmp_path: Path, **overrides: object) -> object:
    x, _ = FeatureSuite().sample(4096, torch.Generator().manual_seed(0))
    settings = dict(architecture="topk", d_sae=64, k=4, batch_size=512, total_tokens=4096, progress=False)
    settings |= dict(checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=2)
    return fit(x, **{**settings, **overrides})


def test_a_checkpoint_resumes_only_the_run_that_wrote_it(tmp_path: Path) -> None:
    from rama.errors import ConfigError

    first = small_run(tmp_path)
    # where it runs and how often it reports may change; the finished run resumes as is
    again = small_run(tmp_path, log_every=3, checkpoint_every=5)
    assert torch.equal(first.W_dec, again.W_dec)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"trained with k=4, this run asks k=8"):
        small_run(tmp_path, k=8)
    with pytest.raises(ConfigError, match=r"d_sae=64, this run asks d_sae=32"):
        small_run(tmp_path, d_sae=32)  # another width: the same clear error, not a size-mismatch traceback
    with pytest.raises(ConfigError, match=r"lr=None, this run asks lr=0.001.*seed=0, this run asks seed=3"):
        small_run(tmp_path, lr=1e-3, seed=3)
    x, _ = FeatureSuite().sample(4096, torch.Generator().manual_seed(0))
    with pytest.raises(
        ConfigError, match=r"hook_name='', this run asks hook_name='blocks.1.hook_resid_post'"
    ):
        fit(x, architecture="topk", d_sae=64, k=4, batch_size=512, total_tokens=4096, progress=False,
            checkpoint_dir=str(tmp_path / "ckpt"), metadata={"hook_name": "blocks.1.hook_resid_post"})  # fmt: skip


def test_a_checkpoint_without_recorded_settings_of_another_width_is_a_config_error(tmp_path: Path) -> None:
    from rama.errors import ConfigError

    small_run(tmp_path)
    path = tmp_path / "ckpt" / "checkpoint.pt"
    saved = torch.load(path, weights_only=True)
    del saved["settings"]  # as checkpoints written before settings were recorded
    torch.save(saved, path)
    with pytest.raises(ConfigError, match=r"an SAE of another shape than this run asks \(d_sae=32"):
        small_run(tmp_path, d_sae=32)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"architecture": "bogus"}, "unknown SAE architecture 'bogus'; known: batchtopk, gated, jumprelu"),
        ({"d_sae": 0}, "d_sae must be a positive integer; got 0"),
        ({"k": 0}, r"0 < k <= d_sae \(4608\); got k=0"),
        ({"architecture": "standard"}, "needs l1_coefficient > 0"),
        ({"architecture": "jumprelu", "l0_coefficient": 0.0}, "needs l0_coefficient > 0"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"lr": float("nan")}, "lr must be > 0"),
        ({"batch_size": 0}, "batch_size must be a positive integer; got 0"),
        ({"total_tokens": -1}, "total_tokens must be at least one batch"),
        ({"total_tokens": 4000}, r"at least one batch \(batch_size 4,096\); got 4,000"),
        ({"b_dec_init": "median"}, "b_dec_init must be"),
        (
            {"architecture": "topk", "l1_coefficient": 1.0},
            "l1_coefficient: not a training setting, nor one of",
        ),
    ],
)
def test_every_setting_is_checked_when_the_config_is_made(settings: dict[str, object], message: str) -> None:
    from rama.errors import ConfigError
    from rama.sae import TrainConfig

    with pytest.raises(ConfigError, match=message):
        TrainConfig.create(**settings)


def test_a_training_step_keeps_its_terms_on_the_device_until_logged() -> None:
    from rama.activations import TensorBatches
    from rama.sae import TrainConfig
    from rama.sae.training import init_run, log_record, train_step

    x, _ = FeatureSuite().sample(2048, torch.Generator().manual_seed(0))
    for architecture, settings in [
        ("topk", {"k": 4}),
        ("matryoshka", {"k": 4}),
        ("gated", {"l1_coefficient": 1.0}),
    ]:
        config = TrainConfig.create(
            architecture=architecture, d_sae=64, batch_size=512, total_tokens=2048, **settings
        )
        run = init_run(config, TensorBatches(x, None, 512, 0), {})
        terms = train_step(run, x[:512], x[:512], config)
        assert all(
            isinstance(t, torch.Tensor) and t.ndim == 0 and not t.requires_grad for t in terms.values()
        )
        record = log_record(run, terms)
        assert record["step"] == 1 and all(isinstance(v, float) for k, v in record.items() if k != "step")
        assert (
            0 < record["fvu"] < 10  # gated starts dense: 3.7 on its first step
            and record["l0"] > 0
            and record["loss"] == pytest.approx(float(terms["loss"]))
        )
