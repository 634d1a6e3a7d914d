"""The producer–consumer ring with real processes: two `rama activations produce` workers (one
SIGKILLed and restarted) fill a bounded ring while this process trains an SAE on it, is
interrupted and resumes. Every token arrives exactly once, the ring stays within its bound, the
resumed run ends with the uninterrupted run's weights, and mismatched settings are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from cli_helpers import rama_in_process
from rama import load
from rama.activations import HarvestConfig, RingActivations, RingLayout, ShuffleBuffer, harvest, produce
from rama.activations.disk_cache import CacheMismatchError, cache_key
from rama.errors import ConfigError
from rama.sae import SAE, fit
from tiny_models import VOCAB, build

pytestmark = pytest.mark.distributed

SITE = "blocks.0.hook_resid_post"
HARVEST = HarvestConfig(
    tokens=1536, batch_size=4, context_size=16, exclude_special_tokens=False, progress=False
)
ROWS = 1536  # 24 model batches of 4 × 16 tokens: 12 per producer, 6 shards of 2 batches each
SHARD_ROWS, CAPACITY, STEPS, BATCH, EVERY = 128, 3, 48, 32, 4
BUFFER = 128
RETAINED = (2 * EVERY * BATCH + BUFFER) // SHARD_ROWS + 2  # read shards a resumable consumer keeps
TRAIN = dict(architecture="topk", d_sae=64, k=4, total_tokens=ROWS, batch_size=BATCH, checkpoint_every=EVERY,
             progress=False, seed=0)  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with a word-level tokenizer saved as a folder, and a word-salad corpus."""
    folder = tmp_path_factory.mktemp("ring")
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, VOCAB)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    build("llama").save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    generator = torch.Generator().manual_seed(0)
    lines = [
        json.dumps(
            {"text": " ".join(f"w{int(i)}" for i in torch.randint(3, VOCAB, (40,), generator=generator))}
        )
        for _ in range(150)
    ]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def produce_args(root: Path, ring: Path, producer: int, *extra: str) -> list[str]:
    return ["activations", "produce", "--ring", str(ring), "--producer", str(producer), "--producers", "2",
            "--capacity", str(CAPACITY), "--batches-per-shard", "2", "--model", str(root / "model"),
            "--site", SITE, "--corpus", str(root / "corpus.jsonl"), "--tokens", str(HARVEST.tokens),
            "--batch-size", "4", "--context-size", "16", "--no-exclude-special-tokens", "--no-progress", *extra]  # fmt: skip


def start_producer(root: Path, ring: Path, producer: int) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "rama.cli.main", *produce_args(root, ring, producer)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


class Recording:
    """A ring consumer that records each step's batch, and stops like Ctrl-C at `stop_at`."""

    def __init__(
        self, source: RingActivations, seen: dict[int, torch.Tensor], stop_at: int | None = None
    ) -> None:
        self.source, self.seen, self.stop_at = source, seen, stop_at
        self.inputs, self.targets = source.inputs, source.targets

    def from_step(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for index, (x, y) in enumerate(self.source.from_step(step), start=step):
            if index == self.stop_at:
                raise KeyboardInterrupt
            if index in self.seen:  # a replayed step after the resume: the batch it had before
                assert torch.equal(self.seen[index], x), index
            self.seen[index] = x.clone()
            yield x, y


class DiskWatch(threading.Thread):
    """Polls the ring: the most shard files on disk at once, and the most unread ones."""

    def __init__(self, ring: Path) -> None:
        super().__init__(daemon=True)
        self.ring, self.stop, self.most, self.most_unread = ring, threading.Event(), 0, 0

    def run(self) -> None:
        while not self.stop.is_set():
            shards = [int(p.name[6:12]) for p in self.ring.glob("shard-*.safetensors")]
            progress = self.ring / "consumer-0" / "progress.json"
            read = json.loads(progress.read_text())["read"] if progress.exists() else 0
            self.most = max(self.most, len(shards))
            self.most_unread = max(self.most_unread, len([g for g in shards if g >= read]))
            time.sleep(0.002)


def train(ring: Path, seen: dict[int, torch.Tensor], out: Path, stop_at: int | None = None) -> Any:
    source = RingActivations(ring, SITE, batch_size=BATCH, buffer_tokens=BUFFER, seed=3, snapshot_every=EVERY)
    return fit(Recording(source, seen, stop_at), checkpoint_dir=str(out), **TRAIN)  # type: ignore[arg-type]


def test_two_producers_one_consumer_every_token_once_bounded_and_resumable(
    root: Path, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    ring = tmp_path / "ring"
    producers = [start_producer(root, ring, 0), start_producer(root, ring, 1)]
    deadline = time.monotonic() + 60
    while not (ring / "shard-000001.safetensors").exists():  # producer 1 has written its first shard
        assert producers[1].poll() is None and time.monotonic() < deadline, producers[1].communicate()
        time.sleep(0.01)
    producers[1].send_signal(signal.SIGKILL)
    producers[1].wait()
    producers[1] = start_producer(root, ring, 1)
    watch = DiskWatch(ring)
    watch.start()
    seen: dict[int, torch.Tensor] = {}
    with pytest.raises(KeyboardInterrupt):
        train(ring, seen, tmp_path / "sae", stop_at=22)  # interrupted after the checkpoint of step 20
    resumed = train(ring, seen, tmp_path / "sae")
    for process in producers:
        assert process.wait(timeout=60) == 0, process.communicate()
    watch.stop.set()
    watch.join()

    model = load(str(root / "model"))
    single = harvest(model, [SITE], HARVEST, root / "corpus.jsonl")[SITE]
    consumed = torch.cat([seen[step] for step in range(STEPS)])
    assert consumed.shape == single.shape == (ROWS, 32)
    # the same multiset of rows, to float noise (rows of other tokens are > 0.1 apart; a context's first
    # token gives the same row wherever it repeats): each harvested row is consumed as often as harvested
    near = torch.cdist(single, consumed) < 1e-3
    assert near.any(0).all()
    assert torch.equal(near.sum(1), (torch.cdist(single, single) < 1e-3).sum(1))
    assert watch.most_unread <= CAPACITY and watch.most <= CAPACITY + RETAINED, (
        watch.most_unread,
        watch.most,
    )
    assert len(list(ring.glob("shard-*"))) <= RETAINED  # only what the consumer's resume still needs

    # the same shards written in this process, read once without interruption: the same batches and weights
    reference_ring, reference_seen = tmp_path / "reference", {}
    layout = RingLayout(producers=2, capacity=100, batches_per_shard=2)
    for producer in (0, 1):
        produce(model, [SITE], reference_ring, HARVEST, layout, producer, root / "corpus.jsonl")
    shards = [load_file(str(p)) for p in sorted(reference_ring.glob("shard-*.safetensors"))]
    expected = list(ShuffleBuffer(BUFFER, BATCH, 3).batches(iter(shards)))  # the stream's shuffle
    uninterrupted = train(reference_ring, reference_seen, tmp_path / "reference-sae")
    assert len(expected) == STEPS
    for step in range(STEPS):
        assert torch.equal(reference_seen[step], expected[step][SITE])
        assert torch.allclose(seen[step], reference_seen[step], atol=1e-6)
    for name, value in uninterrupted.state_dict().items():
        assert torch.allclose(resumed.state_dict()[name], value, atol=1e-5), name

    # a producer restarted after its shards were read and deleted counts them from the consumer's record
    (reference_ring / "done-0.json").unlink()
    left = sorted(p.name for p in reference_ring.glob("shard-*"))
    assert produce(model, [SITE], reference_ring, HARVEST, layout, 0, root / "corpus.jsonl") == 6
    assert sorted(p.name for p in reference_ring.glob("shard-*")) == left


def test_mismatched_settings_are_refused_before_any_work(root: Path, tmp_path: Path) -> None:
    model = load(str(root / "model"))
    ring, corpus = tmp_path / "ring", root / "corpus.jsonl"
    layout = RingLayout(producers=2, capacity=100, batches_per_shard=2)
    produce(model, [SITE], ring, HARVEST, layout, 0, corpus)
    written = sorted(p.name for p in ring.iterdir())

    result = rama_in_process(*produce_args(root, ring, 1, "--seed", "1"))  # refused before loading the model
    assert result.returncode == 1 and "harvest" in result.stderr and "'seed': 1" in result.stderr
    result = rama_in_process(*produce_args(root, ring, 1, "--context-size", "8"))
    assert result.returncode == 1 and "'context_size': 8" in result.stderr
    with pytest.raises(CacheMismatchError, match="sites"):
        produce(model, ["blocks.1.hook_resid_post"], ring, HARVEST, layout, 1, corpus)
    with pytest.raises(CacheMismatchError, match="producers"):
        produce(model, [SITE], ring, HARVEST, RingLayout(3, 1, 100, 2), 1, corpus)
    assert sorted(p.name for p in ring.iterdir()) == written  # nothing was harvested

    other = HarvestConfig(tokens=1536, batch_size=4, context_size=16, seed=1, progress=False)
    with pytest.raises(CacheMismatchError, match="seed"):
        RingActivations(ring, SITE, batch_size=BATCH, expect=cache_key(model, other, corpus))
    with pytest.raises(CacheMismatchError, match="model"):
        RingActivations(ring, SITE, batch_size=BATCH, expect={"model": "smollm2-135m"})
    with pytest.raises(ConfigError, match=r"blocks\.1\.hook_resid_post"):
        RingActivations(ring, "blocks.1.hook_resid_post", batch_size=BATCH)
    assert not (ring / "consumer-0").exists()  # no consumer read anything


def test_rama_sae_train_consumes_a_ring_that_two_producer_processes_fill(root: Path, tmp_path: Path) -> None:
    """`rama sae train --activation-ring` trains on what the producers write, as `fit` does on the
    same rows (bit for bit), with the ring's corpus for its held-out evaluation."""
    ring = tmp_path / "ring"
    producers = [start_producer(root, ring, 0), start_producer(root, ring, 1)]
    settings = ["--architecture", "topk", "--d-sae", "64", "--k", "4", "--batch-size", str(BATCH),
                "--total-tokens", "1024", "--checkpoint-every", "8", "--eval-tokens", "256", "--no-progress"]  # fmt: skip
    args = ["sae", "train", "--model", str(root / "model"), "--site", SITE, "--activation-ring", str(ring)]
    result = rama_in_process(*args, *settings, "--out", str(tmp_path / "sae"))
    for process in producers:
        assert process.wait(timeout=60) == 0, process.communicate()
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "sae" / "metrics.json").read_text())
    assert (metrics["data"], metrics["tokens"]) == ("ring", 1024) and metrics["fvu"] < 1

    model = load(str(root / "model"))
    reference = tmp_path / "reference"
    for producer in (0, 1):
        produce(
            model,
            [SITE],
            reference,
            HARVEST,
            RingLayout(2, 1, CAPACITY + 100, 2),
            producer,
            root / "corpus.jsonl",
        )
    source = RingActivations(reference, SITE, batch_size=BATCH, buffer_tokens=256, snapshot_every=8)
    expected = fit(source, **{**TRAIN, "total_tokens": 1024, "checkpoint_every": 8})
    trained = SAE.load(tmp_path / "sae").state_dict()
    assert all(torch.equal(trained[name], value) for name, value in expected.state_dict().items())


def test_a_ring_consumer_refuses_other_data_options_and_a_ring_too_small(root: Path, tmp_path: Path) -> None:
    ring = tmp_path / "ring"
    produce(
        load(str(root / "model")), [SITE], ring, HARVEST, RingLayout(1, 1, 100, 2), 0, root / "corpus.jsonl"
    )
    base = ["sae", "train", "--model", str(root / "model"), "--activation-ring", str(ring), "--batch-size", "32",
            "--no-progress", "--out", str(tmp_path / "sae")]  # fmt: skip
    result = rama_in_process(*base, "--site", SITE, "--activation-cache", str(tmp_path / "cache"))
    assert result.returncode == 1 and "it takes no --activation-cache: leave it out" in result.stderr
    result = rama_in_process(*base, "--site", f"{SITE},blocks.1.hook_resid_post")
    assert result.returncode == 1 and "one ring consumer trains one SAE, not 2" in result.stderr
    result = rama_in_process(*base, "--site", SITE, "--total-tokens", "1536")
    assert result.returncode == 1 and "harvest 1,536 tokens; training 1,536" in result.stderr, result.stderr
    result = rama_in_process(*base, "--site", SITE, "--total-tokens", "1024", "--corpus", "other.jsonl")
    assert result.returncode == 1 and "harvested from corpus" in result.stderr
    assert not (ring / "consumer-0").exists() and not (tmp_path / "sae" / "cfg.json").exists()
