"""Loading: local folders, model objects, errors that say what is wrong, and atomic first builds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers as tf

import rama
from rama.errors import InputError
from rama.models import ModelNotFoundError
from rama.models.loading import BUILTIN_MODELS, MARKER, BuiltinModel, ensure_builtin, models_cache


def tiny_llama_folder(tmp_path: Path, tokenizer: Any) -> Path:
    torch.manual_seed(0)
    config = tf.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    folder = tmp_path / "tiny-llama"
    tf.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_local_folder_loads_with_all_sites_and_hf_numbers(tmp_path: Path, smollm: Any) -> None:
    folder = tiny_llama_folder(tmp_path, smollm.tokenizer)
    model = rama.load(folder)
    plain = tf.AutoModelForCausalLM.from_pretrained(folder).eval()
    tokens = model.to_tokens("A local folder works offline.")
    with torch.no_grad():
        assert torch.equal(model(tokens), plain(tokens).logits)
    assert model.cfg.n_layers == 2 and model.cfg.n_kv_heads == 2 and len(model.sites) == 2 * 17 + 3


def test_constructed_model_object_needs_its_tokenizer() -> None:
    config = tf.GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32)
    hf = tf.GPT2LMHeadModel(config)
    with pytest.raises(TypeError, match="pass the model's tokenizer too"):
        rama.load(hf)


def test_missing_folder_names_the_path_and_the_builtins(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"does not exist.*smollm2-135m, minilm-l6"):
        rama.load(tmp_path / "nope")


def test_folder_without_config_or_weights(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        rama.load(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="no weights"):
        rama.load(tmp_path)


@pytest.mark.slow
def test_corrupt_weights_file_is_a_clear_error(tmp_path: Path, smollm: Any) -> None:
    folder = tiny_llama_folder(tmp_path, smollm.tokenizer)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelNotFoundError, match="could not be loaded"):
        rama.load(folder)


def test_unknown_name_offline_fails_at_once_listing_builtins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError, match=r"not a built-in model.*smollm2-135m, minilm-l6"):
        rama.load("no-such-model-anywhere")
    assert time.monotonic() - start < 5


def test_unreachable_hub_fails_fast_without_retrying() -> None:
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError, match=r"Built-in models \(work offline\): smollm2-135m"):
        rama.load("someone/no-such-model")
    assert time.monotonic() - start < 15


def test_unsupported_architecture_lists_supported_ones() -> None:
    config = tf.OPTConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2
    )
    with pytest.raises(InputError, match=r"no adapter for model_type 'opt'.*gpt2.*llama"):
        rama.HookedModel(tf.OPTForCausalLM(config), tokenizer=None)


@pytest.mark.slow
def test_killed_first_conversion_leaves_no_model_and_the_next_load_succeeds(tmp_path: Path) -> None:
    env = {**os.environ, "RAMA_CACHE": str(tmp_path)}
    script = "import rama; rama.load('smollm2-135m')"
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:  # wait until conversion has begun, then kill -9 mid-way
        if "converting" in line:
            time.sleep(4)
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    final = tmp_path / "models" / "smollm2-135m"
    assert not final.exists() or (final / MARKER).exists()
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (final / MARKER).is_file() and (final / "model.safetensors").stat().st_size > 500_000_000
    staging = [p.name for p in final.parent.iterdir() if p.name.startswith(".smollm2-135m.")]
    assert staging == []  # the killed run's staging folder is gone, and so is the lock
    assert models_cache() != tmp_path / "models"  # the test used its own cache, not the user's


def test_builtin_cache_is_rebuilt_when_its_pinned_wheel_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in built-in whose 'model' is the installed rama/models folder (copied, not converted)."""
    monkeypatch.setenv("RAMA_CACHE", str(tmp_path))
    spec = BuiltinModel("stand-in", "stand-in==1.0", "rama", "models", "a folder", "Apache-2.0")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / ".stand-in.x7y8z9ab").mkdir()  # left by a killed conversion
    final = ensure_builtin(spec, progress=lambda message: None)
    assert (final / "loading.py").is_file()
    assert json.loads((final / MARKER).read_text())["requirement"] == "stand-in==1.0"
    assert sorted(p.name for p in final.parent.iterdir()) == ["stand-in"]
    (final / "loading.py").unlink()  # a finished conversion is not looked at again...
    assert ensure_builtin(spec, progress=lambda message: None) == final
    assert not (final / "loading.py").exists()
    newer = BuiltinModel("stand-in", "stand-in==2.0", "rama", "models", "a folder", "Apache-2.0")
    ensure_builtin(newer, progress=lambda message: None)  # ...until the pinned wheel changes
    assert (final / "loading.py").is_file()
    assert json.loads((final / MARKER).read_text())["requirement"] == "stand-in==2.0"


def test_builtin_smollm_says_it_is_the_quantised_instruct_model() -> None:
    description = BUILTIN_MODELS["smollm2-135m"].description
    assert "Instruct" in description and "4-bit" in description and "dequantised" in description
