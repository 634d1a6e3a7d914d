"""A corpus of fewer documents than the hold-out period still has a test split: its tail."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from activation_helpers import sentences, tiny_lm
from rama.activations import HarvestConfig
from rama.data import PackConfig, token_batches
from rama.data.packing import select_split, tail_split
from rama.data.texts import iter_documents
from rama.sae import TrainConfig, train


def small_txt(path: Path, kilobytes: int) -> Path:
    """About `kilobytes` KB of paragraphs: a .txt becomes ~20 KB documents, so 400 KB is ~20."""
    paragraphs, size, seed = [], 0, 0
    while size < kilobytes * 1000:
        paragraphs.append(" ".join(sentences(6, seed)))
        size, seed = size + len(paragraphs[-1]) + 2, seed + 1
    path.write_text("\n\n".join(paragraphs) + "\n")
    return path


def test_a_small_source_holds_out_its_last_two_percent(tmp_path: Path) -> None:
    documents = list(iter_documents(small_txt(tmp_path / "book.txt", 400)))
    assert 10 < len(documents) < 50  # too few for every 50th document to be held out
    train, test = list(select_split(documents, "train", 50)), list(select_split(documents, "test", 50))
    total, held = sum(map(len, documents)), sum(map(len, test))
    assert 0.019 * total < held < 0.021 * total
    assert train[:-1] == documents[: len(train) - 1] and documents[-1].endswith(test[-1])
    assert sum(map(len, train)) + held >= total - len(test)  # nothing lost but the whitespace at the cut
    assert tail_split(["one two three four"], 4) == (["one two three"], ["four"])
    many = [f"doc {i}" for i in range(100)]
    assert list(select_split(many, "test", 50)) == ["doc 49", "doc 99"]  # large sources: unchanged


@pytest.mark.filterwarnings(
    "ignore:ce_loss_recovered is undefined"
)  # a random tiny model: no loss to recover
def test_training_on_a_400_kb_txt_still_evaluates(smollm: Any, tmp_path: Path) -> None:
    corpus = small_txt(tmp_path / "book.txt", 400)
    test_batches = list(token_batches(smollm.tokenizer, corpus, batch_size=4, config=PackConfig(context_size=32,
                                                                                               split="test")))  # fmt: skip
    assert len(test_batches) >= 4
    config = TrainConfig(d_sae=64, batch_size=64, total_tokens=64 * 10, progress=False)
    harvest = HarvestConfig(tokens=4 * 32 * 8, batch_size=4, context_size=32, progress=False)
    _, metrics = train(tiny_lm(smollm.tokenizer), "blocks.1.hook_resid_post", tmp_path / "sae", config=config,
                       corpus=corpus, harvest_config=harvest, eval_tokens=512)  # fmt: skip
    assert metrics["eval_tokens"] == 512 and math.isfinite(metrics["fvu"])
    assert (tmp_path / "sae" / "metrics.json").exists()
