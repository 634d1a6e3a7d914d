"""The runner: one decision for where batches come from, outputs checked and locked before any
work, the SAE saved before it is evaluated, and streaming metrics that say what was harvested."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from activation_helpers import jsonl_corpus, tiny_lm
from rama.activations import HarvestConfig
from rama.errors import ConfigError, OutputError
from rama.sae import SAE, TrainConfig, train, train_many
from rama.sae.runner import Job, OutputExistsError, plan_data

SITE = "blocks.1.hook_resid_post"
HARVEST = HarvestConfig(tokens=4 * 32 * 12, batch_size=4, context_size=32, progress=False)


def small(**overrides: Any) -> TrainConfig:
    return TrainConfig(
        **{"d_sae": 64, "batch_size": 64, "total_tokens": 64 * 20, "progress": False, **overrides}
    )


@pytest.fixture(scope="module")
def lm(smollm: Any) -> Any:
    return tiny_lm(smollm.tokenizer)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return jsonl_corpus(tmp_path_factory.mktemp("corpus") / "docs.jsonl", 300)


def refuse_forward(activation: torch.Tensor, hook: Any) -> None:
    raise AssertionError("the model ran before the output was checked")


def test_where_batches_come_from_is_decided_in_one_place(tmp_path: Path) -> None:
    jobs = [Job(SITE, tmp_path / "a", TrainConfig(total_tokens=20_000, batch_size=512))]
    memory, streamed = plan_data(jobs, stream=False), plan_data(jobs)  # the default streams
    cached = plan_data(jobs, activation_cache=tmp_path / "acts")
    assert (memory.kind, memory.harvest.tokens) == ("memory", 20_000)
    assert (streamed.kind, streamed.harvest.tokens) == ("stream", 25_000)  # a buffer that fits the run
    assert (cached.kind, cached.cache, cached.harvest.tokens) == ("disk", tmp_path / "acts", 20_000)
    epochs = plan_data(jobs, harvest_config=HarvestConfig(tokens=1024))  # fewer tokens: epochs in memory
    assert (epochs.kind, epochs.harvest.tokens) == ("memory", 1024)
    with pytest.raises(ConfigError, match=r"harvest_config.tokens \(1,024\) must be at least total_tokens"):
        plan_data(jobs, stream=True, harvest_config=HarvestConfig(tokens=1024))


def test_a_stream_reports_the_tokens_it_harvested_and_the_time(lm: Any, corpus: Path, tmp_path: Path) -> None:
    harvest_config = HarvestConfig(tokens=4 * 32 * 15, batch_size=4, context_size=32, progress=False)
    _, metrics = train(lm, SITE, tmp_path / "s", config=small(), corpus=corpus, harvest_config=harvest_config,
                       eval_tokens=256, stream=True)  # fmt: skip
    assert metrics["data"] == "stream" and metrics["tokens"] == 64 * 20
    assert 64 * 20 <= metrics["harvested_tokens"] <= 15 * 4 * 31  # not the trained count copied over
    assert metrics["harvest_seconds"] > 0 and math.isfinite(metrics["fvu"])


def test_the_sae_is_saved_before_evaluation_so_a_failure_there_keeps_it(
    lm: Any, corpus: Path, tmp_path: Path
) -> None:
    calls = []

    def break_evaluation(activation: torch.Tensor, hook: Any) -> None:
        calls.append(1)
        if len(calls) > 12:  # the 12 harvest batches pass; the first evaluation forward fails
            raise RuntimeError("evaluation broke")

    out = tmp_path / "sae"
    with pytest.raises(RuntimeError, match="evaluation broke"), lm.hooks([(SITE, break_evaluation)]):
        train(
            lm,
            SITE,
            out,
            config=small(),
            corpus=corpus,
            harvest_config=HARVEST,
            eval_tokens=256,
            stream=False,
        )
    kept = SAE.load(out)
    assert kept.cfg.d_sae == 64 and kept.cfg.hook_name == SITE
    assert (out / "train_config.json").exists() and (out / "metrics.jsonl").exists()
    assert not (out / "checkpoint").exists() and not (out / "metrics.json").exists()
    assert not (tmp_path / "sae.lock").exists()
    with pytest.raises(OutputExistsError, match="already holds a trained SAE"):
        train(lm, SITE, out, config=small(), corpus=corpus, harvest_config=HARVEST)


def test_a_second_process_writing_the_same_folder_is_refused(lm: Any, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "sae"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from rama.locking import exclusive\n"
         "with exclusive(sys.argv[1]):\n    print('locked', flush=True); time.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with (
            pytest.raises(OutputError, match="being written by another process") as refused,
            lm.hooks([(SITE, refuse_forward)]),
        ):
            train(lm, SITE, out, config=small(), corpus=corpus, harvest_config=HARVEST)
        assert str(out) in str(refused.value)
    finally:
        holder.kill()
        holder.wait()
    (tmp_path / ".sae.k1ll3d_x").mkdir()  # the staging folder of a save killed midway
    (tmp_path / ".sae.k1ll3d_x" / "cfg.json").write_text("{}")
    (tmp_path / ".sae.notes").mkdir()  # not a staging name: left alone
    _, metrics = train(
        lm, SITE, out, config=small(), corpus=corpus, harvest_config=HARVEST, eval_tokens=256, stream=False
    )
    assert metrics["data"] == "memory"  # the lock died with its process
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sae.notes", "sae"]


def test_unusable_outputs_are_refused_before_any_work(lm: Any, corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with lm.hooks([(SITE, refuse_forward)]):
        with pytest.raises(OutputExistsError, match="is a file"):
            train(lm, SITE, tmp_path / "file", config=small(), corpus=corpus, harvest_config=HARVEST)
        with pytest.raises(OutputExistsError, match=r"already holds files \(todo.txt\)"):
            train(lm, SITE, tmp_path / "notes", config=small(), corpus=corpus, harvest_config=HARVEST)
        with pytest.raises(ConfigError, match="same output folder"):
            train_many(lm, [Job(SITE, tmp_path / "x", small()), Job(SITE, tmp_path / "x", small())])


def test_jobs_share_one_harvest_and_evaluation_shows_progress(
    lm: Any, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = [
        Job(SITE, tmp_path / "a", small(progress=True)),
        Job("blocks.0.hook_resid_post", tmp_path / "b", small()),
    ]
    results = train_many(lm, jobs, corpus=corpus, harvest_config=HARVEST, eval_tokens=256, stream=False)
    first, second = (metrics for _, metrics in results)
    assert first["harvested_tokens"] == second["harvested_tokens"] > 64 * 10  # one harvest, both sites
    assert first["data"] == second["data"] == "memory"
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["fvu"] == second["fvu"]
    assert "test activations" in capsys.readouterr().err  # the evaluation's bar


def test_streaming_inside_a_hooks_block_harvests_in_the_callers_thread(
    lm: Any, corpus: Path, tmp_path: Path
) -> None:
    """The caller's `with model.hooks(...)` holds the model; a background harvest would wait for it
    forever. The stream sees that and harvests in the caller's thread, with the caller's hooks."""
    seen: list[str] = []

    def record(activation: torch.Tensor, hook: Any) -> None:
        seen.append(threading.current_thread().name)

    with lm.hooks([(SITE, record)]):
        assert lm.runs_in_this_thread_only()
        _, metrics = train(lm, SITE, tmp_path / "s", config=small(), corpus=corpus, harvest_config=HARVEST,
                           eval_tokens=256)  # fmt: skip
    assert metrics["data"] == "stream" and not lm.runs_in_this_thread_only()
    assert seen and set(seen) == {threading.current_thread().name}
