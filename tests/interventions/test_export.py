"""A steered model written as plain Hugging Face weights behaves as rama's steered model does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import rama
from rama.interventions import add_vector
from rama.interventions.export import export_steered
from rama.toys import pretrained
from rama.toys.toy_transformer import word_tokenizer
from tiny_models import build


def tiny(arch: str) -> rama.HookedModel:
    return rama.load(build(arch), word_tokenizer([f"w{i}" for i in range(93)]))


def check_same(model: rama.HookedModel, site: str, vector: torch.Tensor, strength: float, out: Path) -> None:
    folder = export_steered(model, site, vector, strength, out)
    plain = AutoModelForCausalLM.from_pretrained(folder).eval()  # no rama involved
    tokens = torch.tensor([[1, 7, 9, 4, 30, 22, 5]])
    hook = add_vector(model, site, vector, strength)
    with torch.no_grad():
        steered = model.run_with_hooks(tokens, [hook])
        exported = plain(input_ids=tokens).logits
        torch.testing.assert_close(exported, steered, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(steered, model(tokens), atol=1e-3)  # the steering does something
        ours = model.generate(tokens, max_new_tokens=12, fwd_hooks=[hook])
        theirs = plain.generate(input_ids=tokens, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize(
    ("arch", "site"),
    [
        ("llama", "blocks.1.hook_resid_post"),
        ("llama", "blocks.1.hook_attn_out"),
        ("gpt_neox", "blocks.1.hook_resid_pre"),
        ("gpt2", "blocks.0.hook_mlp_out"),
    ],
)
def test_exported_weights_reproduce_rama_steering(arch: str, site: str, tmp_path: Path) -> None:
    model = tiny(arch)
    vector = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    check_same(model, site, vector, 3.0, tmp_path / arch)


def test_export_of_a_shipped_toy_and_bad_requests(tmp_path: Path) -> None:
    model = rama.load(pretrained("ioi"))
    vector = model.W_U[:, model.tokenizer.convert_tokens_to_ids("Mary")]  # push towards " Mary"
    check_same(model, "blocks.2.hook_resid_post", vector, 2.0, tmp_path / "ioi")
    with pytest.raises(FileExistsError, match="already holds files"):
        export_steered(model, "blocks.2.hook_resid_post", vector, 2.0, tmp_path / "ioi")
    with pytest.raises(ValueError, match="only an additive vector"):
        export_steered(model, "blocks.2.attn.hook_z", vector, 2.0, tmp_path / "z")
    with pytest.raises(ValueError, match="precedes every bias"):
        export_steered(model, "blocks.0.hook_resid_pre", vector, 2.0, tmp_path / "pre")
    with pytest.raises(ValueError, match="NaN or inf"):
        export_steered(model, "blocks.1.hook_resid_post", vector * float("nan"), 2.0, tmp_path / "nan")
    gemma = rama.load(build("gemma2"), word_tokenizer([f"w{i}" for i in range(93)]))
    with pytest.raises(ValueError, match="has no bias that adds straight"):
        export_steered(gemma, "blocks.0.hook_resid_post", torch.ones(gemma.cfg.d_model), 1.0, tmp_path / "g")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing half-written


def test_a_killed_exports_staging_folder_is_removed_by_the_next_run(tmp_path: Path) -> None:
    model = tiny("gpt2")
    vector = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(3))
    stale = tmp_path / ".steered.x7f3k2q9"  # the staging folder a killed export leaves beside its target
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half a file")
    mine = tmp_path / ".steered-notes"  # not a staging name of `steered`: left alone
    mine.write_text("keep")
    check_same(model, "blocks.0.hook_mlp_out", vector, 1.0, tmp_path / "steered")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".steered-notes", "steered"]


@pytest.mark.slow
def test_smollm2_steered_export_generates_what_rama_generates(
    smollm: rama.HookedModel, tmp_path: Path
) -> None:
    from rama.interventions import contrastive_vector

    site = "blocks.12.hook_resid_post"
    vector = contrastive_vector(smollm, site, ["The ship sailed on the sea"], ["The meeting starts at nine"])
    folder = export_steered(smollm, site, vector, 6.0, tmp_path / "smollm-sea")
    plain = AutoModelForCausalLM.from_pretrained(folder).eval()
    prompt = smollm.to_tokens("My favourite place is")
    hook = add_vector(smollm, site, vector, 6.0)
    with torch.no_grad():
        ours = smollm.generate(prompt, max_new_tokens=12, fwd_hooks=[hook])
        theirs = plain.generate(input_ids=prompt, max_new_tokens=12, do_sample=False, pad_token_id=2)
        unsteered = smollm.generate(prompt, max_new_tokens=12)
    assert torch.equal(ours, theirs) and not torch.equal(ours, unsteered)
