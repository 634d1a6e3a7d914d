"""`rama toys`: rebuild a toy from its seed into a folder that plain transformers and rama both open."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import GPT2LMHeadModel

import rama
from cli_helpers import rama_cli, rama_in_process


def test_train_writes_a_loadable_toy_and_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    result = rama_cli("toys", "train", "induction-1l", "--steps", "30", "--seed", "4", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "ground_truth.json",
        "training_curve.png",
    ):
        assert (out / name).is_file(), name
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["schedule"]["seed"] == 4 and truth["schedule"]["steps"] == 30
    curve = json.loads((out / "training_curve.json").read_text())
    assert curve[-1]["step"] == 29
    plain = GPT2LMHeadModel.from_pretrained(out).eval()
    model = rama.load(out)
    tokens = torch.tensor([[1, 5, 6, 7, 5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(model(tokens), plain(input_ids=tokens).logits)
    again = rama_cli("toys", "train", "induction-1l", "--steps", "30", "--out", str(out))
    assert again.returncode == 1 and "already holds files" in again.stderr
    assert not list(tmp_path.glob(".toy.*"))  # no staging folder left behind


def test_unknown_toys_and_missing_out_are_clear_errors() -> None:
    result = rama_cli("toys", "train", "grokking", "--out", "x")
    assert (
        result.returncode == 1
        and "unknown toy 'grokking'" in result.stderr
        and "induction-2l" in result.stderr
    )
    result = rama_cli("toys", "train", "ioi")
    assert result.returncode == 1 and "--out" in result.stderr
    listing = rama_cli("toys", "list")
    assert listing.returncode == 0 and "superposition" in listing.stdout and "induction-2l" in listing.stdout


def test_a_folder_with_files_is_refused_before_training(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    started = time.perf_counter()
    result = rama_in_process("toys", "train", "ioi", "--out", str(out))  # 1,500 steps if it trained
    assert time.perf_counter() - started < 1.0
    assert result.returncode == 1 and "already holds files" in result.stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    bad = rama_in_process("toys", "train", "ioi", "--steps", "0", "--out", str(tmp_path / "new"))
    assert bad.returncode == 1 and "--steps must be at least 1" in bad.stderr
