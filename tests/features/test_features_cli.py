"""`rama features build` end to end on a tiny Llama saved as a local folder, over a JSON-lines corpus."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from feature_helpers import SITE, tiny_sae, word_tokenizer

from cli_helpers import rama_in_process
from rama.data import PackConfig, token_batches
from rama.features import FeatureStore
from rama.sae import SAE
from tiny_models import VOCAB, build


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    build("llama").save_pretrained(root / "model")
    word_tokenizer().save_pretrained(root / "model")
    sae = tiny_sae()
    sae.cfg.model_name = str(root / "model")
    sae.save(root / "sae")
    rng = random.Random(0)
    lines = [
        json.dumps({"text": " ".join(f"w{rng.randrange(3, VOCAB)}" for _ in range(30))}) for _ in range(60)
    ]
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    return root


def build_args(root: Path, *extra: str) -> list[str]:
    return ["features", "build", str(root / "sae"), "--corpus", str(root / "corpus.jsonl"), "--tokens", "256",
            "--context-size", "16", "--batch-size", "4", "--out", str(root / "f.db"), "--no-progress", *extra]  # fmt: skip


def test_build_writes_a_store_and_refuses_to_overwrite_it(folders: Path) -> None:
    result = rama_in_process(*build_args(folders))
    assert result.returncode == 0, result.stderr
    assert f"24 latents of {SITE} and 64 neurons of blocks.1.mlp.hook_post, over" in result.stdout
    with FeatureStore(folders / "f.db", sae=SAE.load(folders / "sae")) as db:
        assert db.meta["corpus"] == str(folders / "corpus.jsonl") and db.meta["context_size"] == 16
        batches = token_batches(word_tokenizer(), folders / "corpus.jsonl", batch_size=4,
                                config=PackConfig(context_size=16), max_tokens=256)  # fmt: skip
        tokens = torch.cat(list(batches))
        assert tokens.shape == (16, 16) and db.meta["tokens"] == int((tokens > 2).sum())  # specials left out
        assert all(
            token.startswith("w") or token in ("<s>", "</s>") for e in db.examples(3) for token in e["tokens"]
        )
    again = rama_in_process(*build_args(folders))
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert again.stderr.strip().splitlines() == [f"rama: error: {str(folders / 'f.db')!r} already exists; "
                                                 "pass --replace (replace=True) to rebuild it"]  # fmt: skip
    assert rama_in_process(*build_args(folders, "--replace", "--top-k", "3")).returncode == 0
    with FeatureStore(folders / "f.db") as db:
        assert max(len(db.examples(i)) for i in range(24)) == 3


def test_bad_settings_are_one_line_errors(folders: Path) -> None:
    result = rama_in_process(*build_args(folders, "--replace", "--quantiles", "0"))
    assert (
        result.returncode == 1 and result.stderr.strip() == "rama: error: quantiles must be at least 1, not 0"
    )
    missing = rama_in_process("features", "build", str(folders / "nowhere"), "--out", str(folders / "g.db"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
