"""Sites spread over ranks (gloo, 2 real processes): one shared model pass, each site's SAE trained
by its owning rank alone, equal to a single-process `train_many` on the same tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sites_worker import HARVEST, SITES, jobs

from features.feature_helpers import tiny_model
from net_helpers import free_port
from rama.errors import ConfigError
from rama.sae import SAE, TrainConfig, train_many
from rama.sae.runner import Job, site_owners

pytestmark = pytest.mark.distributed
WORKER = Path(__file__).with_name("sites_worker.py")


def word_corpus(path: Path, documents: int = 200) -> Path:
    """Documents of the word tokenizer's words (w3 … w96), seeded."""
    generator = torch.Generator().manual_seed(0)
    lines = []
    for _ in range(documents):
        ids = torch.randint(3, 97, (40,), generator=generator).tolist()
        lines.append(json.dumps({"text": " ".join(f"w{i}" for i in ids)}))
    path.write_text("\n".join(lines) + "\n")
    return path


def run_ranks(out: Path, corpus: Path, *args: str, size: int = 2) -> None:
    port = free_port()
    ranks = []
    for rank in range(size):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "LOCAL_RANK": str(rank), "WORLD_SIZE": str(size), "RAMA_DIST_TIMEOUT": "120", "OMP_NUM_THREADS": "1"}  # fmt: skip
        log = open(out.parent / f"rank{rank}.log", "w")  # noqa: SIM115 (closed when the process ends)
        ranks.append(subprocess.Popen([sys.executable, str(WORKER), str(out), str(corpus), *args], env=env,
                                      stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
    codes = [rank.wait(timeout=300) for rank in ranks]
    logs = [(out.parent / f"rank{r}.log").read_text()[-2000:] for r in range(size)]
    assert codes == [0] * size, logs


def test_each_rank_trains_its_site_equal_to_one_process(tmp_path: Path) -> None:
    corpus = word_corpus(tmp_path / "words.jsonl")
    out = tmp_path / "ranks"
    out.mkdir()
    run_ranks(out, corpus)
    returned = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [[item["site"] for item in got] for got in returned] == [[SITES[0]], [SITES[1]]]  # round-robin
    assert all(
        item["site_rank"] == r and item["processes"] == 2 for r, got in enumerate(returned) for item in got
    )
    torch.set_num_threads(1)
    single = tmp_path / "single"
    train_many(
        tiny_model(), jobs(single), corpus=corpus, harvest_config=HARVEST, eval_tokens=128, stream=False
    )
    for site in SITES:
        assert sorted(p.name for p in (out / site).iterdir()) == sorted(
            p.name for p in (single / site).iterdir()
        )
        a, b = SAE.load(out / site).state_dict(), SAE.load(single / site).state_dict()
        difference = max(float((a[k] - b[k]).abs().max()) for k in a)
        assert difference == 0, (site, difference)  # the same rows in the same order: bit for bit
        ranked, alone = (json.loads((d / site / "metrics.json").read_text()) for d in (out, single))
        assert ranked["harvested_tokens"] == alone["harvested_tokens"]


def test_the_runner_shards_latents_over_ranks_as_one_process_trains(tmp_path: Path) -> None:
    """`train_many` with parallel='latents': every rank harvests the same tokens, so the recorded
    token counts and global batch are one process's, and the SAE equals one process's up to
    reduction order (tests/distributed/test_latent_sharding.py bounds the same difference)."""
    corpus = word_corpus(tmp_path / "words.jsonl")
    out = tmp_path / "ranks"
    out.mkdir()
    run_ranks(out, corpus, "latents")
    torch.set_num_threads(1)
    single = tmp_path / "single"
    train_many(tiny_model(), jobs(single, "latents"), corpus=corpus, harvest_config=HARVEST,
               eval_tokens=128, stream=False)  # fmt: skip
    site = SITES[0]
    a, b = SAE.load(out / site).state_dict(), SAE.load(single / site).state_dict()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    ranked, alone = (json.loads((d / site / "metrics.json").read_text()) for d in (out, single))
    assert (ranked["harvested_tokens"], ranked["tokens"]) == (alone["harvested_tokens"], alone["tokens"])
    assert ranked["tokens"] == 32 * 30 and ranked["processes"] == 2
    recorded = json.loads((out / site / "train_config.json").read_text())
    assert (recorded["parallel"], recorded["world_size"], recorded["global_batch_size"]) == ("latents", 2, 32)


def test_assignment_is_balanced_and_round_robin_for_equal_costs() -> None:
    assert site_owners([1, 1, 1, 1, 1], 2) == [0, 1, 0, 1, 0]
    assert site_owners([8, 1, 1, 1], 2) == [0, 1, 1, 1]  # the big job alone on rank 0
    assert site_owners([1], 3) == [0]  # extra ranks only harvest


def test_unsupported_combinations_are_refused(tmp_path: Path) -> None:
    latents = TrainConfig(parallel="latents", progress=False)
    with pytest.raises(ConfigError, match="parallel='latents' without distribute_sites"):
        train_many(tiny_model(), [Job(SITES[0], tmp_path / "a", latents)], distribute_sites=True)
    with pytest.raises(ConfigError, match="does not stream"):
        train_many(tiny_model(), [Job(SITES[0], tmp_path / "a")], distribute_sites=True, stream=True)
    mixed = [Job(SITES[0], tmp_path / "a"), Job(SITES[1], tmp_path / "b", latents)]
    with pytest.raises(ConfigError, match="mix parallel modes"):
        train_many(tiny_model(), mixed)
