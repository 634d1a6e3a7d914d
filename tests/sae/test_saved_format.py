"""Files written before each architecture owned its config (kept in data/saved_before_h1b, written by
the pre-change code from the same weights) are what the current code writes, and still load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from rama.sae import SAE, SAEConfig, arch_config

BEFORE = Path(__file__).parent / "data" / "saved_before_h1b"
COMMON: dict[str, Any] = dict(
    d_in=12, d_sae=40, model_name="m", hook_name="blocks.3.hook_resid_post", context_size=64
)
CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "topk": ("topk", {"k": 5}, {}),
    "batchtopk": ("batchtopk", {"k": 5}, {}),
    "matryoshka": ("matryoshka", {"k": 5, "matryoshka_widths": [10, 40]}, {}),
    "standard": ("standard", {"l1_coefficient": 2.5}, {}),
    "jumprelu": ("jumprelu", {"l0_coefficient": 0.5, "jumprelu_bandwidth": 0.2}, {}),
    "gated": ("gated", {"l1_coefficient": 1.5}, {}),
    "skip_transcoder": (
        "topk",
        {"k": 5},
        {"d_out": 7, "skip_connection": True, "hook_name_out": "blocks.3.hook_mlp_out"},
    ),
}


def fill(sae: SAE) -> SAE:
    """Every parameter and buffer from one seeded generator, in name order (as the baseline was)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in sorted(sae.state_dict(keep_vars=True).items()):
            values = torch.randn(tensor.shape, generator=generator)
            if "threshold" in name:
                values = values.abs() * 0.1 + 0.05
                if name == "log_threshold":
                    values = values.log()
            tensor.copy_(values)
    return sae.eval()


def build(case: str) -> SAE:
    architecture, settings, extra = CASES[case]
    cfg = SAEConfig(
        architecture=architecture, arch=arch_config(architecture, **settings), **{**COMMON, **extra}
    )
    sae = fill(SAE.create(cfg))
    sae.cfg.input_scale = 1.25
    return sae


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_weights_are_written_byte_for_byte(case: str, tmp_path: Path) -> None:
    build(case).save(tmp_path / case)
    before, now = BEFORE / case, tmp_path / case
    assert (now / "sae_weights.safetensors").read_bytes() == (before / "sae_weights.safetensors").read_bytes()
    old, new = json.loads((before / "cfg.json").read_text()), json.loads((now / "cfg.json").read_text())
    # everything SAELens reads is identical, key order included; rama's own block keeps every shared
    # value and this architecture's settings, and no longer lists the other architectures' settings
    old_block, new_block = old.pop("rama"), new.pop("rama")
    assert list(new.items()) == list(old.items())
    widths = old_block["extra"].pop("matryoshka_widths", None)  # was in `extra`, now a setting
    assert new_block.pop("matryoshka_widths", None) == widths
    assert all(old_block[name] == value for name, value in new_block.items())
    assert set(old_block) - set(new_block) <= {
        "k",
        "l1_coefficient",
        "l0_coefficient",
        "jumprelu_bandwidth",
        "initial_threshold",
        "aux_k_coefficient",
    }


@pytest.mark.parametrize("case", list(CASES))
def test_folders_written_before_load_to_the_same_sae(case: str) -> None:
    now = build(case)
    loaded = SAE.load(BEFORE / case)
    assert loaded.architecture == ("jumprelu" if case in ("batchtopk", "matryoshka") else now.architecture)
    assert loaded.cfg.to_dict().items() >= {"hook_name": now.cfg.hook_name, "input_scale": 1.25}.items()
    x = torch.randn(16, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), now.encode(x))
        torch.testing.assert_close(loaded(x), now(x))
    if case in ("standard", "jumprelu", "gated"):
        assert loaded.cfg.arch == now.cfg.arch  # the settings come back too
