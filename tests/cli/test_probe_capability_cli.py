"""`rama probe capability` end to end on a tiny Llama with a character-level tokenizer (so the built-in
capabilities' prompts tokenise as they would with a real one) and a tiny TopK SAE saved as folders."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
import transformers as tf
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

from cli_helpers import rama_in_process
from features.feature_helpers import SITE, tiny_sae
from rama.sae import SAE, SAEConfig, TopKConfig
from tiny_models import VOCAB, build


def character_tokenizer() -> Any:
    """One token per character (lower-cased; <pad> 0, <s> 1, </s> 2, unknown characters → <pad>)."""
    characters = " " + string.ascii_lowercase + string.digits + string.punctuation
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(characters)}}
    assert len(vocab) <= VOCAB
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("capability-cli")
    model = build("llama")
    model.config.max_position_embeddings = 256  # character-level prompts run to ~80 tokens (RoPE: any length)
    model.save_pretrained(root / "model")
    character_tokenizer().save_pretrained(root / "model")
    tiny_sae().save(root / "sae")
    narrow = SAE.create(
        SAEConfig(d_in=16, d_sae=8, architecture="topk", arch=TopKConfig(k=2), hook_name=SITE)
    )
    narrow.save(root / "narrow")
    return root


def capability(root: Path, *extra: str) -> Any:
    return rama_in_process("probe", "capability", "--model", str(root / "model"), "--prompts", "8",
                           "--random-trials", "1", "--no-progress", *extra)  # fmt: skip


def test_table_and_json(root: Path) -> None:
    table = capability(root, "--sae", str(root / "sae"), "--target", "letters", "--latents", "3")
    assert table.returncode == 0, table.stderr
    assert "ablating 3 latents of 'letters' at blocks.1.hook_resid_post (rule contrast)" in table.stdout
    assert "| **letters** (target) | 4 |" in table.stdout and "| countries | 4 |" in table.stdout
    assert "specificity (target drop / mean control drop)" in table.stdout
    as_json = capability(root, "--sae", str(root / "sae"), "--target", "brackets", "--latents", "2", "--json")
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["target"] == "brackets" and len(result["latents"]) == 2
    assert [r["name"] for r in result["rows"]] == ["countries", "letters", "brackets"]
    assert {"accuracy", "accuracy_ablated", "accuracy_random", "logprob", "logprob_ablated"} <= set(
        result["rows"][0]
    )
    assert "specificity" in result and "random_specificity" in result


def test_refusals_are_one_line(root: Path) -> None:
    cases = [
        (["--sae", str(root / "sae"), "--target", "poetry"], "unknown capability 'poetry'; choose one of"),
        (["--sae", str(root / "sae"), "--target", "letters", "--latents", "99"], "this SAE has only 24"),
        (["--sae", str(root / "narrow"), "--target", "letters", "--latents", "2"], "d_in=16"),
        (["--target", "letters"], "--sae is required"),
        (["--sae", str(root / "sae"), "--target", "letters", "--rule", "best"], "rule 'best' is not one of"),
    ]
    for extra, message in cases:
        refused = capability(root, *extra)
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr
        lines = [line for line in refused.stderr.splitlines() if line.strip() and "Loading" not in line]
        assert len(lines) == 1 and lines[0].startswith("rama: error: ")
