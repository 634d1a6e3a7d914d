"""Data-parallel SAE training with real processes (gloo, 2 ranks on the CPU): equal to one process
with the same global batch, rank 0 alone writes, a killed rank stops the other with a message naming
it, and a rerun resumes to the same final weights, on 2 processes or on 1."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from ddp_worker import SETTINGS, activations
from launch_helpers import run_torchrun, start_ranks

from rama.sae import fit

pytestmark = pytest.mark.distributed

# Two ranks average their gradients in another order than one process sums them, and their matmuls
# run on half the rows: after 40 Adam steps the weights differ by float32 rounding only (measured:
# 4.8e-7 at most, weights up to 2.6). The bound, 1e-4, is far above that rounding and far below
# what a wrong batch, a missing all-reduce or a per-rank FVU normalisation would shift.
BOUND = 1e-4


def weights_differ(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def single_process(checkpoint_dir: Path | None = None) -> dict[str, torch.Tensor]:
    """The same run in this process, its global batch of 128 in one piece."""
    folder = None if checkpoint_dir is None else str(checkpoint_dir)
    return fit(activations(), batch_size=128, checkpoint_dir=folder, **SETTINGS).state_dict()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two ranks under torchrun itself, start to finish."""
    out = tmp_path_factory.mktemp("ddp")
    result = run_torchrun(out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_two_ranks_equal_one_process_with_the_same_global_batch(uninterrupted: Path) -> None:
    rank0 = torch.load(uninterrupted / "rank0.pt", weights_only=True)
    rank1 = torch.load(uninterrupted / "rank1.pt", weights_only=True)
    assert weights_differ(rank0, rank1) == 0  # replicas stay identical: same averaged gradient
    difference = weights_differ(rank0, single_process())
    assert difference < BOUND, difference


def test_rank_0_alone_writes_checkpoints_and_metrics(uninterrupted: Path) -> None:
    folder = uninterrupted / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt", "metrics.jsonl"]
    steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5, 41, 5))  # each line once: a second writer would duplicate them
    saved = torch.load(folder / "checkpoint.pt", weights_only=True)
    assert json.loads(saved["parallel"]) == {"mode": "data_parallel", "world_size": 2, "order": "global"}
    assert json.loads(saved["settings"])["batch_size"] == 128  # recorded as the global batch


def test_a_killed_rank_stops_the_other_and_a_rerun_resumes_to_the_same_weights(
    uninterrupted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    rank0, rank1 = start_ranks(out, "--pause-at", "25")
    deadline = time.monotonic() + 900
    while not (out / "paused").exists():  # rank 1 waits before step 25; rank 0 blocks in its all-reduce
        assert rank0.poll() is None and rank1.poll() is None, (out / "rank0.log").read_text()
        assert time.monotonic() < deadline, "rank 1 never reached step 25"
        time.sleep(0.05)
    saved = torch.load(out / "checkpoint" / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 20
    rank1.kill()  # SIGKILL
    killed = time.monotonic()
    assert rank0.wait(timeout=120) == 1
    assert time.monotonic() - killed < 60  # gloo sees the closed socket at once, not the 300 s timeout
    log = (out / "rank0.log").read_text()
    message = log.strip().splitlines()[-1]
    assert message.startswith("rama: error: rank 0 of 2: the ")
    assert f"rank 1 (pid {rank1.pid}) died" in message and "resume" in message, log
    rank1.wait()
    backup = tmp_path / "step20"
    shutil.copytree(out / "checkpoint", backup)

    rerun = start_ranks(out)  # the same command: resumes from step 20
    assert [rank.wait(timeout=900) for rank in rerun] == [0, 0], (out / "rank0.log").read_text()
    expected = torch.load(uninterrupted / "rank0.pt", weights_only=True)
    assert weights_differ(torch.load(out / "rank0.pt", weights_only=True), expected) == 0

    # the same checkpoint onto one process with the same global batch: in-memory epochs allow it
    resumed = single_process(backup)
    assert weights_differ(resumed, expected) < BOUND
