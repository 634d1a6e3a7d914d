"""`rama.distributed` in one process: every helper a no-op; bad settings refused before any work;
checkpoints of another mode or of a per-rank data order on another number of processes refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from ddp_worker import SETTINGS, activations

from rama import distributed as rd
from rama.errors import ConfigError
from rama.sae import fit

pytestmark = pytest.mark.distributed


def test_every_helper_is_a_no_op_in_one_process() -> None:
    assert rd.setup_distributed() == rd.World() == rd.world() and rd.is_main() and not dist.is_initialized()
    x = torch.tensor([1.5, -2.0])
    assert rd.all_reduce_tensor(x, "max") is x and x.tolist() == [1.5, -2.0]
    grads = [torch.ones(2, 3), torch.full((4,), 3.0)]
    rd.all_reduce_mean(grads)
    rd.broadcast_tensors(grads)
    assert grads[0].tolist() == [[1.0] * 3] * 2 and grads[1].tolist() == [3.0] * 4
    assert rd.broadcast_object({"a": 1}) == {"a": 1}
    rd.barrier()
    assert rd.run_on_main(lambda: 7, "a check") == 7
    with pytest.raises(ConfigError, match="boom"):
        rd.run_on_main(lambda: (_ for _ in ()).throw(ConfigError("boom")), "a check")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"RAMA_DIST_BACKEND": "nccl"}, "nccl needs CUDA GPUs"),
        ({"RAMA_DIST_BACKEND": "mpi"}, "must be one of auto, gloo, nccl"),
        ({"RAMA_DIST_TIMEOUT": "soon"}, "RAMA_DIST_TIMEOUT must be a number"),
        ({"RAMA_DIST_TIMEOUT": "0"}, "positive number of seconds"),
        ({"MASTER_PORT": ""}, "MASTER_ADDR and MASTER_PORT not set"),
        ({"RANK": "2"}, "RANK must be in 0..WORLD_SIZE-1 = 0..1"),
    ],
)
def test_bad_distributed_settings_are_refused_before_joining(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    if "nccl" in env.values() and torch.cuda.is_available():
        pytest.skip("this machine has CUDA: nccl is allowed")
    settings = {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1", **env}
    for name, value in settings.items():
        if value:
            monkeypatch.setenv(name, value)
        else:  # an empty value: the variable is missing
            monkeypatch.delenv("MASTER_ADDR", raising=False)
            monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=expected):
        rd.setup_distributed()
    assert not dist.is_initialized()


def rewrite_parallel(checkpoint: Path, record: dict[str, object]) -> None:
    saved = torch.load(checkpoint, weights_only=True)
    saved["parallel"] = json.dumps(record)
    torch.save(saved, checkpoint)


def test_checkpoints_resume_only_where_the_split_allows(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint"
    settings = {**SETTINGS, "total_tokens": 10 * 128, "batch_size": 128, "checkpoint_dir": str(folder)}
    fit(activations(), **settings)  # leaves its step-10 checkpoint
    checkpoint = folder / "checkpoint.pt"
    assert json.loads(torch.load(checkpoint, weights_only=True)["parallel"])["order"] == "global"
    longer = settings  # the same run: it resumes at its end and returns at once
    rewrite_parallel(checkpoint, {"mode": "latent_sharded", "world_size": 2, "order": "global"})
    with pytest.raises(
        ConfigError, match="checkpoint of a 'latent_sharded' run; this run is 'data_parallel'"
    ):
        fit(activations(), **longer)
    rewrite_parallel(checkpoint, {"mode": "data_parallel", "world_size": 2, "order": "per_rank"})
    with pytest.raises(
        ConfigError, match=r"written by 2 process\(es\) and this run has 1.*--nproc-per-node 2"
    ):
        fit(activations(), **longer)
    # 2 ranks striding one in-memory order with the same global batch: resumes here
    rewrite_parallel(checkpoint, {"mode": "data_parallel", "world_size": 2, "order": "global"})
    resumed = fit(activations(), **longer)
    assert torch.load(checkpoint, weights_only=True)["step"] == 10 and resumed.W_dec.isfinite().all()


def test_after_a_failed_collective_the_process_exits_1_at_once_with_its_output_flushed() -> None:
    # the exit path a rank takes when its peer died: no teardown of the broken group (which can abort)
    script = (
        "import sys; from rama.distributed.process_group import leave_at_exit, mark_broken\n"
        "print('rama: error: rank 0 of 2: ...', file=sys.stderr, end=''); print('written', end='')\n"
        "mark_broken(); leave_at_exit(); print('never')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (1, "written", "rama: error: rank 0 of 2: ...")
