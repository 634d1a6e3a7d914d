"""The built-in corpus and the packing policy, on the real corpus and the real SmolLM2 tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from rama.data import CorpusError, PackConfig, builtin_corpus, iter_documents, token_batches

pytestmark = pytest.mark.slow


def test_builtin_corpus_has_five_million_tokens_and_records_its_sources(smollm: Any) -> None:
    path = builtin_corpus()
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert set(manifest["sources"]) >= {"austen", "mobydick", "web", "kjv", "shakespeare"}
    assert "public domain" in (path.parent / "SOURCES.md").read_text()
    total = sum(
        b.numel()
        for b in token_batches(smollm.tokenizer, batch_size=256, config=PackConfig(seed=None, split="all"))
    )
    assert total >= 5_000_000
    text = path.read_text()
    assert "It is a truth universally acknowledged" in text
    assert "In the beginning, God created the heavens and the earth." in text
    assert "Call me Ishmael." in text


def test_contexts_start_with_bos_and_documents_are_separated_by_eos(smollm: Any, tmp_path: Path) -> None:
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": f"Document number {i} says hello."}) for i in range(40)))
    config = PackConfig(context_size=16, seed=None, split="all")
    batches = list(token_batches(smollm.tokenizer, corpus, batch_size=2, config=config))
    tokens = torch.cat(batches)
    tok = smollm.tokenizer
    assert tokens.shape[1] == 16 and (tokens[:, 0] == tok.bos_token_id).all()
    assert (tokens[:, 1:] == tok.bos_token_id).sum() == 0
    stream = tokens[:, 1:].flatten().tolist()
    first_doc = tok("Document number 0 says hello.", add_special_tokens=False)["input_ids"]
    assert stream[: len(first_doc) + 1] == [*first_doc, tok.eos_token_id]


def test_same_seed_same_batches_other_seed_other_batches(smollm: Any) -> None:
    def first(seed: int) -> torch.Tensor:
        config = PackConfig(seed=seed, shuffle_buffer=64)
        return next(token_batches(smollm.tokenizer, batch_size=4, config=config))

    assert torch.equal(first(1), first(1))
    assert not torch.equal(first(1), first(2))


def test_train_and_test_splits_are_disjoint(tmp_path: Path, smollm: Any) -> None:
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": f"doc {i}"}) for i in range(100)))
    train = set(d for d in iter_documents(corpus))
    config = dict(context_size=4, seed=None, holdout_every=10)
    test_tokens = torch.cat(
        list(token_batches(smollm.tokenizer, corpus, batch_size=1, config=PackConfig(**config, split="test")))
    )
    held_out = set(smollm.to_string(test_tokens[:, 1:].flatten()).split(smollm.tokenizer.eos_token))
    assert {"doc 9", "doc 19"} <= held_out and "doc 8" not in held_out and len(train) == 100


def test_local_txt_jsonl_and_parquet(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("First paragraph.\n\nSecond paragraph.\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"body": "from jsonl"}) + "\n")
    assert list(iter_documents(tmp_path / "a.txt")) == ["First paragraph.\n\nSecond paragraph."]
    assert list(iter_documents(tmp_path / "b.jsonl", text_field="body")) == ["from jsonl"]
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pyarrow.table({"text": ["p one", "p two"]}), tmp_path / "c.parquet")
    assert list(iter_documents(tmp_path / "c.parquet")) == ["p one", "p two"]


def test_bad_corpora_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        list(iter_documents(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(CorpusError, match="is empty"):
        list(iter_documents(tmp_path / "empty.txt"))
    (tmp_path / "bad.jsonl").write_text('{"x": 1}\n')
    with pytest.raises(CorpusError, match="no 'text' field"):
        list(iter_documents(tmp_path / "bad.jsonl"))
    with pytest.raises(ValueError, match="context_size must be at least 2"):
        PackConfig(context_size=1)


def test_memory_stays_bounded_while_streaming(smollm: Any) -> None:
    import resource

    stream = token_batches(smollm.tokenizer, batch_size=8, config=PackConfig(shuffle_buffer=256))
    next(stream)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    count = sum(1 for _, _ in zip(range(1500), stream, strict=False))  # ~1.5M tokens
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert count == 1500 and (after - before) < 300_000  # KiB: well under the corpus's tokenised size
