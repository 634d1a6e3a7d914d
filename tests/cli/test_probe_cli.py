"""`rama probe train` and `rama probe eval` end to end on a tiny Llama saved as a local folder, with a
user's JSON-lines statements and a JSON-lines control corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import rama_in_process
from features.feature_helpers import word_tokenizer
from probes.probe_helpers import control_words, word_statements
from tiny_models import build


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("probe-cli")
    build("llama").save_pretrained(root / "model")
    word_tokenizer().save_pretrained(root / "model")
    dataset = word_statements(40)
    rows = [
        {"text": t, "label": y, "group": g}
        for t, y, g in zip(dataset.texts, dataset.labels, dataset.groups, strict=True)
    ]
    (root / "words.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    other = word_statements(20, seed=5, name="other")
    rows = [{"text": t, "label": y} for t, y in zip(other.texts, other.labels, strict=True)]
    (root / "other.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sentences = [f"This is {text} again." for text in control_words(60)]  # 30+ characters, one sentence each
    (root / "control.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in sentences))
    return root


def train_args(root: Path, *extra: str) -> list[str]:
    return ["probe", "train", "--model", str(root / "model"), "--site", "blocks.*.hook_resid_post",
            "--data", str(root / "words.jsonl"), "--corpus", str(root / "control.jsonl"), "--control", "50",
            "--no-progress", *extra]  # fmt: skip


def test_train_then_eval(root: Path) -> None:
    trained = rama_in_process(*train_args(root, "--kind", "diffmean", "--out", str(root / "probe")))
    assert trained.returncode == 0, trained.stderr
    assert "diffmean probe at blocks." in trained.stdout and "AUROC 1.0000" in trained.stdout
    record = json.loads((root / "probe" / "probe.json").read_text())
    assert record["kind"] == "diffmean" and record["control"]["items"] == 50
    held_out = rama_in_process(
        "probe", "eval", str(root / "probe"), "--data", str(root / "words.jsonl"), "--json"
    )
    assert held_out.returncode == 0, held_out.stderr
    metrics = json.loads(held_out.stdout)
    assert {"auroc", "accuracy", "recall_at_1pct_fpr", "ece"} <= set(metrics)
    assert metrics["held_out_split"] and metrics["items"] == record["test"]["items"]  # only the test groups
    # the same probe on the same statements (batched differently: activations agree to float32 rounding)
    assert metrics["auroc"] == record["test"]["auroc"]
    assert metrics["ece"] == pytest.approx(record["test"]["ece"], abs=1e-6)
    other = rama_in_process("probe", "eval", str(root / "probe"), "--data", str(root / "other.jsonl"))
    assert other.returncode == 0, other.stderr
    assert "on other" in other.stdout and "recall at 1% fpr" in other.stdout and "items" not in other.stdout


def test_refusals(root: Path) -> None:
    missing = rama_in_process("probe", "train", "--model", str(root / "model"), "--site", "blocks.0.hook_resid_post",
                              "--out", str(root / "x"))  # fmt: skip
    assert missing.returncode == 1 and "--data is required" in missing.stderr
    bad_kind = rama_in_process(*train_args(root, "--kind", "svm", "--out", str(root / "y")))
    assert bad_kind.returncode == 1 and "probe kind 'svm' is not one of" in bad_kind.stderr
    one_class = root / "one.jsonl"
    one_class.write_text("".join(json.dumps({"text": f"w{i} w5", "label": 1}) + "\n" for i in range(30, 60)))
    refused = rama_in_process(
        *[
            a if a != str(root / "words.jsonl") else str(one_class)
            for a in train_args(root, "--out", str(root / "z"))
        ]
    )
    assert refused.returncode == 1 and "holds only label 1" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    rama_in_process(*train_args(root, "--kind", "lda", "--out", str(root / "p2")))
    build("llama", seed=3).save_pretrained(root / "model")  # the folder now holds other weights
    other_model = rama_in_process("probe", "eval", str(root / "p2"), "--data", str(root / "other.jsonl"))
    build("llama").save_pretrained(root / "model")
    assert other_model.returncode == 1 and "fingerprint" in other_model.stderr
