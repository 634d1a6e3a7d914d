"""`rama.load(..., device_map=...)`: tiny checkpoints saved to disk, loaded whole and split between the
CPU and disk offload (accelerate moves the offloaded weights in for each forward and out again), must
give every site, the logits and a harvest bit-identical to the unsplit model; bad maps are refused
before any weight is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import transformers as tf
from tokenizers import Tokenizer, models, pre_tokenizers

import rama
from activation_helpers import WORDS, jsonl_corpus
from rama.activations.harvest import HarvestConfig, harvest
from rama.errors import ConfigError
from rama.hooks.model import HookedModel
from rama.models.device_map import onloaded
from tiny_models import CONFIGS

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]
LLAMA_SPLIT = {
    "model.embed_tokens": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.layers.2": "disk",
    "model.norm": "disk",
    "model.rotary_emb": "cpu",
    "lm_head": "disk",
}
GPT2_SPLIT = {"transformer.wte": "disk", "lm_head": "disk", "transformer.h.0": "disk", "": "cpu"}


def word_tokenizer() -> Any:
    """A word-level tokenizer over the test corpus's words: a real HF tokenizer, built offline."""
    vocab = {token: i for i, token in enumerate([*SPECIAL, *sorted(set(WORDS)), "."])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def saved(tmp_path: Path, arch: str, layers: int = 3) -> Path:
    """A tiny random checkpoint (norms and biases randomised too) saved with its tokenizer."""
    tokenizer = word_tokenizer()
    config = CONFIGS[arch]()
    config.vocab_size, config.pad_token_id = len(tokenizer), tokenizer.pad_token_id
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    setattr(config, "n_layer" if arch == "gpt2" else "num_hidden_layers", layers)
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "ln" in name or name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    folder = tmp_path / arch
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tokens(model: HookedModel) -> torch.Tensor:
    return model.to_tokens(["the ship sailed over a calm sea .", "old sailors told stories of storms"])


def assert_same_everywhere(plain: HookedModel, split: HookedModel, skip: str = "attn.hook_result") -> None:
    """Logits and every site equal; `hook_result` is checked apart (see the offloaded-head test below)."""
    ids = tokens(plain)
    with torch.no_grad():
        logits, cache = plain.run_with_cache(ids)
        split_logits, split_cache = split.run_with_cache(ids)
        assert split_logits is not None and logits is not None
        assert torch.equal(split_logits, logits)
        assert torch.equal(split(ids), logits)
    assert set(split_cache) == set(plain.sites) and len(plain.sites) > 30
    compared = [site for site in plain.sites if not (skip and site.endswith(skip))]
    different = [site for site in compared if not torch.equal(split_cache[site], cache[site])]
    assert different == []


def offloaded(model: HookedModel) -> set[str]:
    """The parameters accelerate keeps off the model (on "meta") between forwards."""
    return {name for name, param in model.hf.named_parameters() if param.device.type == "meta"}


def test_llama_split_over_cpu_and_disk_gives_every_site_bit_identical(tmp_path: Path) -> None:
    folder = saved(tmp_path, "llama")
    plain = rama.load(folder)
    split = rama.load(folder, device_map=LLAMA_SPLIT, offload_folder=tmp_path / "offload")
    assert split.hf.hf_device_map == LLAMA_SPLIT
    assert "model.layers.1.self_attn.o_proj.weight" in offloaded(split)
    assert "model.layers.0.self_attn.o_proj.weight" not in offloaded(split)
    assert_same_everywhere(plain, split)
    assert "model.layers.1.self_attn.o_proj.weight" in offloaded(split)  # moved out again afterwards


def test_gpt2_with_its_tied_embedding_on_disk_gives_every_site_bit_identical(tmp_path: Path) -> None:
    folder = saved(tmp_path, "gpt2", layers=2)
    plain = rama.load(folder)
    split = rama.load(folder, device_map=GPT2_SPLIT, offload_folder=tmp_path / "offload")
    assert "transformer.wte.weight" in offloaded(split)
    assert_same_everywhere(plain, split)


def test_whole_model_on_disk_and_auto_run_from_the_cpu(tmp_path: Path) -> None:
    folder = saved(tmp_path, "llama", layers=2)
    plain = rama.load(folder)
    on_disk = rama.load(folder, device_map="disk", offload_folder=tmp_path / "offload")
    assert on_disk.device == torch.device("cpu") and offloaded(on_disk) == {
        name for name, _ in plain.hf.named_parameters()
    }
    assert_same_everywhere(plain, on_disk)
    auto = rama.load(folder, device_map="auto")
    assert_same_everywhere(plain, auto)


def test_head_results_of_offloaded_layers_equal_the_plain_model(tmp_path: Path) -> None:
    folder = saved(tmp_path, "llama", layers=2)
    plain = rama.load(folder)
    split = rama.load(folder, device_map={"model.layers.1": "disk", "": "cpu"}, offload_folder=tmp_path / "o")
    assert_same_everywhere(plain, split, skip="")


def test_onloaded_fetches_an_offloaded_weight_as_its_forward_sees_it(tmp_path: Path) -> None:
    folder = saved(tmp_path, "llama", layers=2)
    plain = rama.load(folder)
    split = rama.load(folder, device_map={"model.layers.1": "disk", "": "cpu"}, offload_folder=tmp_path / "o")
    out_proj = split.hf.get_submodule("model.layers.1.self_attn.o_proj")
    assert out_proj.weight.device.type == "meta"
    weight = onloaded(out_proj, "weight")
    assert weight is not None and torch.equal(
        weight, plain.hf.get_submodule("model.layers.1.self_attn.o_proj").weight
    )
    assert onloaded(out_proj, "bias") is None


def test_harvest_through_a_disk_offloaded_model_equals_the_plain_harvest(tmp_path: Path) -> None:
    folder = saved(tmp_path, "llama")
    corpus = jsonl_corpus(tmp_path / "corpus.jsonl", documents=40)
    config = HarvestConfig(tokens=4 * 2 * 16, batch_size=2, context_size=16, progress=False)
    sites = ["blocks.0.hook_resid_post", "blocks.2.hook_mlp_out", "blocks.1.attn.hook_z"]
    plain = harvest(rama.load(folder), sites, config, corpus)
    split_model = rama.load(folder, device_map=LLAMA_SPLIT, offload_folder=tmp_path / "offload")
    split = harvest(split_model, sites, config, corpus)
    rows, width = plain["blocks.0.hook_resid_post"].shape
    assert width == 32 and 100 < rows <= 4 * 2 * 16  # 4 batches of 2 x 16 less the special tokens
    for site in sites:
        assert split[site].device == torch.device("cpu")
        assert torch.equal(split[site], plain[site])


def test_a_map_that_leaves_modules_unplaced_is_refused_naming_them(tmp_path: Path) -> None:
    folder = saved(tmp_path, "llama")
    partial = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu"}
    message = (
        r"device_map leaves 'lm_head', 'model.layers.2', 'model.norm', 'model.rotary_emb' unplaced; "
        r'give each a device, or place a parent module \(or "" for everything not listed\)'
    )
    with pytest.raises(ConfigError, match=message):
        rama.load(folder, device_map=partial)
    assert not (tmp_path / "offload").exists()


def test_bad_maps_are_one_line_config_errors(tmp_path: Path) -> None:
    folder = saved(tmp_path, "llama", layers=2)
    with pytest.raises(
        ConfigError, match=r"names 'model.layer.1', which the model does not have \(closest: model.layers.1"
    ):
        rama.load(folder, device_map={"model.layer.1": "cpu", "": "cpu"})
    with pytest.raises(ConfigError, match=r"puts model.layers.1 on \"disk\" but no offload_folder was given"):
        rama.load(folder, device_map={"model.layers.1": "disk", "": "cpu"})
    with pytest.raises(
        ConfigError, match=r"places 'model.layers.1.self_attn' apart from the rest of 'model.layers.1'"
    ):
        rama.load(folder, device_map={"model.layers.1.self_attn": "disk", "": "cpu"}, offload_folder=tmp_path)
    gpt2 = saved(tmp_path, "gpt2", layers=1)
    with pytest.raises(
        ConfigError, match=r"transformer.wte.weight and lm_head.weight are one tied tensor but"
    ):
        rama.load(gpt2, device_map={"transformer.wte": "disk", "": "cpu"}, offload_folder=tmp_path)
    with pytest.raises(ConfigError, match=r"names GPU 3, but this machine has \d+ GPU"):
        rama.load(folder, device_map={"model.layers.1": 3, "": "cpu"})
    with pytest.raises(ConfigError, match=r"'gpu' is not a device"):
        rama.load(folder, device_map={"": "gpu"})
    with pytest.raises(ConfigError, match="max_memory only guides a device_map strategy"):
        rama.load(folder, device_map={"": "cpu"}, max_memory={"cpu": "1GiB"})
    with pytest.raises(ConfigError, match="give device or device_map, not both"):
        rama.load(folder, device="cpu", device_map="auto")
    with pytest.raises(ConfigError, match="only apply with a device_map"):
        rama.load(folder, offload_folder=tmp_path)
