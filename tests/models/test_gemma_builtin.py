"""Gemma 3 270M as an opt-in built-in: the pure pieces always, the real model only with RAMA_TEST_GEMMA=1."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

import rama
from rama.models.loading import (
    BUILTIN_MODELS,
    GEMMA3_PARTS,
    ModelNotFoundError,
    concatenate,
    models_cache,
)

SPEC = BUILTIN_MODELS["gemma3-270m"]


def test_gemma_entry_names_its_licence_and_is_opt_in() -> None:
    assert "Gemma Terms of Use" in SPEC.license and "optional, never a default" in SPEC.license
    assert "Gemma Terms of Use" in SPEC.notice and "never a default" in SPEC.notice
    assert SPEC.member.endswith(".gguf") and SPEC.causal and len(SPEC.sha256) == 64
    assert [p.member[-6:] for p in SPEC.parts] == ["part00", "part01", "part02", "part03"]
    assert [p.module[-5:] for p in GEMMA3_PARTS] == ["part1", "part2", "part3", "part4"]
    assert all(p.requirement.endswith("==1.0.0") for p in SPEC.parts)
    assert next(iter(BUILTIN_MODELS)) == "smollm2-135m"  # never the first (default-looking) entry


def write_parts(folder: Path, pieces: list[bytes]) -> list[Path]:
    paths = []
    for i, data in enumerate(pieces):
        path = folder / f"model.gguf.part{i:02d}"
        path.write_bytes(data)
        paths.append(path)
    return paths


def test_concatenate_joins_parts_in_order_and_checks_the_hash(tmp_path: Path) -> None:
    pieces = [b"GGUF" + bytes(range(7)), b"\x00" * 3, b"end"]
    whole = b"".join(pieces)
    parts = write_parts(tmp_path, pieces)
    out = concatenate(parts, tmp_path / "out" / "model.gguf", hashlib.sha256(whole).hexdigest())
    assert out.read_bytes() == whole


def test_concatenate_refuses_parts_out_of_order(tmp_path: Path) -> None:
    pieces = [b"first", b"second"]
    parts = write_parts(tmp_path, pieces)
    expected = hashlib.sha256(b"".join(pieces)).hexdigest()
    with pytest.raises(ModelNotFoundError, match="out of order"):
        concatenate(parts[::-1], tmp_path / "model.gguf", expected)
    assert not (tmp_path / "model.gguf").exists()  # no half-right file left to load later


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("RAMA_TEST_GEMMA") != "1",
    reason="Gemma 3 is opt-in (Gemma Terms of Use, usage conditions): set RAMA_TEST_GEMMA=1 to fetch and test it",
)
def test_gemma_loads_completes_and_its_sites_are_exact() -> None:
    import transformers as tf

    model = rama.load("gemma3-270m")
    c = model.cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads) == (18, 640, 4, 1)
    text = model.generate("The capital of France is Paris. The capital of Germany is", max_new_tokens=4)
    assert "Berlin" in str(text)
    plain = tf.AutoModelForCausalLM.from_pretrained(models_cache() / "gemma3-270m").eval()
    tokens = model.to_tokens("Call me Ishmael. Some years ago, never mind how long precisely")
    with torch.no_grad():
        reference = plain(tokens, output_hidden_states=True)
        logits, cache = model.run_with_cache(tokens, "blocks.*.hook_resid_post")
    assert logits is not None and reference.logits is not None and reference.hidden_states is not None
    assert torch.equal(logits, reference.logits)
    for layer in range(c.n_layers - 1):  # HF's last hidden state is after the final norm
        assert torch.equal(cache[f"blocks.{layer}.hook_resid_post"], reference.hidden_states[layer + 1])
