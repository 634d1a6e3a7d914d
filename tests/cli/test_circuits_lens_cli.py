"""`rama circuits lens` and `rama circuits dla` end to end on a tiny Llama saved as a local folder,
with a word-level tokenizer and a JSON-lines corpus."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from cli_helpers import rama_in_process
from features.feature_helpers import word_tokenizer
from tiny_models import build


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lens-cli")
    build("llama").save_pretrained(root / "model")
    word_tokenizer().save_pretrained(root / "model")
    build("llama", seed=3).save_pretrained(root / "other")
    word_tokenizer().save_pretrained(root / "other")
    rows = torch.randint(3, 97, (200, 40), generator=torch.Generator().manual_seed(0)).tolist()
    text = "".join(json.dumps({"text": " ".join(f"w{i}" for i in row)}) + "\n" for row in rows)
    (root / "corpus.jsonl").write_text(text)
    return root


def lens_args(root: Path, *extra: str) -> list[str]:
    return ["circuits", "lens", str(root / "model"), "--corpus", str(root / "corpus.jsonl"), "--context-size",
            "32", "--batch-size", "2", "--eval-tokens", "128", "--no-progress", *extra]  # fmt: skip


def test_train_then_load_a_tuned_lens(root: Path) -> None:
    out = root / "lens"
    trained = rama_in_process(*lens_args(root, "--train", "--tokens", "256", "--out", str(out), "--json"))
    assert trained.returncode == 0, trained.stderr
    record = json.loads(trained.stdout)
    assert record["trained_tokens"] == 256 and set(record["kl"]) == {"logit", "tuned"}
    assert record["kl"]["logit"][-1] == record["kl"]["tuned"][-1] == 0.0
    assert sorted(p.name for p in out.iterdir()) == [
        "lens_curves.json", "lens_curves.png", "tuned_lens.json", "tuned_lens.safetensors"
    ]  # fmt: skip
    loaded = rama_in_process(*lens_args(root, "--tuned", str(out)))
    assert loaded.returncode == 0, loaded.stderr
    assert "KL tuned" in loaded.stdout and f"{record['kl']['tuned'][0]:10.4f}" in loaded.stdout
    other = rama_in_process("circuits", "lens", str(root / "other"), "--tuned", str(out), "--no-progress")
    last = other.stderr.strip().splitlines()[-1]
    assert other.returncode == 1 and last.startswith("rama: error: this tuned lens was trained on")
    assert "fingerprint" in last
    again = rama_in_process(*lens_args(root, "--train", "--out", str(out)))
    assert again.returncode == 1 and "already holds files" in again.stderr


def test_dla_prints_parts_that_sum_to_the_logit_difference(root: Path) -> None:
    args = ["circuits", "dla", str(root / "model"), "w5 w9 w13 w5 w9", "--answer", "w13", "--wrong", "w20"]
    result = rama_in_process(*args, "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert sum(record["parts"].values()) == pytest.approx(record["sum_of_parts"], abs=1e-5)
    assert record["sum_of_parts"] + record["bias"] == pytest.approx(record["total"], abs=1e-4)
    assert len(record["heads"]) == 2 and len(record["heads"][0]) == 4
    text = rama_in_process(*args, "--top", "3")
    assert (
        text.returncode == 0
        and "top 3 heads by size" in text.stdout
        and re.search(r"L[01]H[0-3] ", text.stdout)
    )


def test_dla_refuses_an_answer_of_several_tokens(root: Path) -> None:
    result = rama_in_process("circuits", "dla", str(root / "model"), "w5 w9", "--answer", "w13 w14")
    assert result.returncode == 1 and "2 tokens" in result.stderr
