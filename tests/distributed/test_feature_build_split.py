"""A feature build split across ranks (gloo, 2 real processes): each rank analyses its stride of
the token batches, rank 0 merges the summaries and writes a store equal, row for row, to the one
a single process writes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from features_worker import build_both

from net_helpers import free_port

pytestmark = pytest.mark.distributed
WORKER = Path(__file__).with_name("features_worker.py")


def word_corpus(path: Path) -> Path:
    generator = torch.Generator().manual_seed(1)
    lines = [
        json.dumps({"text": " ".join(f"w{int(i)}" for i in torch.randint(3, 97, (30,), generator=generator))})
        for _ in range(60)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def rows_of(store: Path) -> list[str]:
    """Every table's rows, as SQL, in order."""
    with sqlite3.connect(store) as connection:
        return list(connection.iterdump())


def test_two_ranks_write_the_store_one_process_writes(tmp_path: Path) -> None:
    corpus = word_corpus(tmp_path / "words.jsonl")
    ranked, single = tmp_path / "ranks", tmp_path / "single"
    ranked.mkdir()
    single.mkdir()
    port, ranks = free_port(), []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "RAMA_DIST_TIMEOUT": "120", "OMP_NUM_THREADS": "1"}  # fmt: skip
        log = open(tmp_path / f"rank{rank}.log", "w")  # noqa: SIM115 (closed when the process ends)
        command = [sys.executable, str(WORKER), str(ranked), str(corpus)]
        ranks.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    codes = [rank.wait(timeout=300) for rank in ranks]
    assert codes == [0, 0], [(tmp_path / f"rank{r}.log").read_text()[-2000:] for r in range(2)]
    torch.set_num_threads(1)
    build_both(single, str(corpus))
    assert sorted(p.name for p in ranked.iterdir()) == ["corpus.db", "rows.db"]  # rank 0 alone wrote
    for name in ("rows.db", "corpus.db"):
        dumped = rows_of(ranked / name)
        assert len(dumped) > 100 and dumped == rows_of(single / name), name
        with sqlite3.connect(ranked / name) as connection:
            meta = dict(connection.execute("SELECT key, value FROM meta"))
        assert json.loads(meta["tokens"]) > 0
