"""Interop with SAELens itself, where it is installed (`pip install sae-lens`; an optional extra):
SAELens loads rama-saved SAEs and computes the same codes; rama loads SAELens-saved SAEs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rama.sae import SAE, SAEConfig, arch_config
from sae_helpers import perturbed

sae_lens = pytest.importorskip("sae_lens")


@pytest.mark.parametrize("architecture", ["topk", "standard", "jumprelu", "gated"])
def test_saelens_loads_what_rama_saves(architecture: str, tmp_path: Path) -> None:
    settings = {"k": 6} if architecture == "topk" else {}
    ours = perturbed(
        SAEConfig(
            d_in=16,
            d_sae=48,
            architecture=architecture,
            arch=arch_config(architecture, **settings),
            hook_name="blocks.2.hook_resid_post",
        )
    )
    ours.save(tmp_path / "sae")
    theirs = sae_lens.SAE.load_from_disk(tmp_path / "sae")
    x = torch.randn(32, 16)
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), ours.encode(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs.decode(theirs.encode(x)), ours(x), rtol=1e-5, atol=1e-5)
    assert theirs.cfg.metadata.hook_name == "blocks.2.hook_resid_post"


@pytest.mark.parametrize("architecture", ["topk", "standard", "jumprelu"])
def test_rama_loads_what_saelens_saves(architecture: str, tmp_path: Path) -> None:
    from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    make = {
        "topk": lambda: TopKSAE(TopKSAEConfig(d_in=16, d_sae=48, k=6, rescale_acts_by_decoder_norm=False)),
        "standard": lambda: StandardSAE(StandardSAEConfig(d_in=16, d_sae=48)),
        "jumprelu": lambda: JumpReLUSAE(JumpReLUSAEConfig(d_in=16, d_sae=48)),
    }
    theirs = make[architecture]()
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.3 + (0.1 if parameter.ndim == 1 else 0))
    theirs.save_model(tmp_path / "sae")
    ours = SAE.load(tmp_path / "sae")
    x = torch.randn(32, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x), theirs.decode(theirs.encode(x)), rtol=1e-5, atol=1e-5)
