"""Every probe kind recovers a planted direction in synthetic data whose answer is known."""

from __future__ import annotations

import pytest
import torch

from rama.errors import InputError
from rama.probes import KINDS, LinearProbe, fit_probe, label_auroc
from rama.probes.kinds import top_latents

D = 24


def planted(pairs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor]:
    """Contrast pairs: a shared random base per pair, plus or minus 1.5 along the planted unit vector
    (coordinate 3), plus small noise; rows alternate true, false. Returns x, y, groups, the direction."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.zeros(D)
    direction[3] = 1.0
    base = torch.randn(pairs, D, generator=generator) * torch.linspace(0.5, 2.0, D)  # anisotropic
    true = base + 1.5 * direction + 0.3 * torch.randn(pairs, D, generator=generator)
    false = base - 1.5 * direction + 0.3 * torch.randn(pairs, D, generator=generator)
    x = torch.stack([true, false], 1).reshape(2 * pairs, D)
    y = torch.tensor([1, 0] * pairs)
    groups = [f"g{i}" for i in range(pairs) for _ in range(2)]
    return x, y, groups, direction


def raw_direction(probe: LinearProbe) -> torch.Tensor:
    """The probe's direction in the input space (undoing standardisation), unit length."""
    w = probe.direction / probe.scale
    return w / w.norm()


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in ("ksparse", "lda")])
def test_kind_recovers_planted_direction(kind: str) -> None:
    x, y, groups, direction = planted(150, seed=0)
    pairs = (list(range(0, 300, 2)), list(range(1, 300, 2)))
    probe = fit_probe(kind, x, y, groups, pairs, seed=0)
    assert probe.kind == kind
    # diffmean is the mean difference, blind to the anisotropic base; it still points along coordinate 3
    assert float(raw_direction(probe) @ direction) > 0.9
    test_x, test_y, _, _ = planted(100, seed=1)
    assert label_auroc(probe.probabilities(test_x), test_y) > 0.99


def test_lda_undoes_a_correlated_nuisance() -> None:
    """A nuisance axis correlated with the label in the mean but with huge shared variance: the
    covariance-adjusted direction finds the planted one, the raw mean difference points elsewhere."""
    generator = torch.Generator().manual_seed(0)
    n = 400
    y = torch.tensor([1, 0] * (n // 2))
    x = torch.randn(n, D, generator=generator) * 0.3
    x[:, 3] += 1.0 * (2 * y - 1)  # the planted signal
    nuisance = torch.randn(n, generator=generator) * 5.0
    x[:, 5] += nuisance + 1.0 * (2 * y - 1)  # a noisy axis with the same mean gap
    groups = [f"g{i}" for i in range(n)]
    probe = fit_probe("lda", x, y, groups, ([], []))
    assert abs(float(raw_direction(probe)[3])) > 0.95
    mass_mean = fit_probe("diffmean", x, y, groups, ([], []))
    assert abs(float(raw_direction(mass_mean)[3])) < 0.9  # the nuisance pulls the plain mean difference


def test_ksparse_picks_the_planted_latents() -> None:
    generator = torch.Generator().manual_seed(0)
    n, latents = 300, 40
    y = torch.tensor([1, 0] * (n // 2))
    codes = torch.relu(torch.randn(n, latents, generator=generator))
    codes[:, 7] += 2.0 * y  # latent 7 fires on true statements
    codes[:, 11] += 1.5 * (1 - y)  # latent 11 on false ones
    assert sorted(top_latents(codes, y, 2).tolist()) == [7, 11]
    probe = fit_probe("ksparse", codes, y, [f"g{i}" for i in range(n)], ([], []), k=2)
    assert probe.latents is not None and sorted(probe.latents.tolist()) == [7, 11]
    weight = dict(zip(probe.latents.tolist(), probe.direction.tolist(), strict=True))
    assert weight[7] > 0 > weight[11]
    assert label_auroc(probe.probabilities(codes), y) > 0.99


def test_bad_training_data() -> None:
    x, y, groups, _ = planted(20, seed=0)
    with pytest.raises(InputError, match="both labels"):
        fit_probe("logistic", x, torch.ones_like(y), groups, ([], []))
    nan = x.clone()
    nan[3, 2] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        fit_probe("diffmean", nan, y, groups, ([], []))
    with pytest.raises(InputError, match="contrast pairs"):
        fit_probe("ccs", x, y, groups, ([], []))
    with pytest.raises(InputError, match="not one of"):
        fit_probe("svm", x, y, groups, ([], []))


@pytest.mark.parametrize("kind", ["diffmean", "lat"])
def test_a_separable_training_set_keeps_its_ranking(kind: str) -> None:
    """Far-apart classes: the calibration slope stays finite and p is never rounded to exactly 0 or 1,
    so held-out items keep their order (ties at 1.0 would pull the AUROC towards 0.5)."""
    x, y, groups, _ = planted(40, seed=0)
    pairs = (list(range(0, 80, 2)), list(range(1, 80, 2)))
    probe = fit_probe(kind, 100 * x, y, groups, pairs)
    test_x, test_y, _, _ = planted(40, seed=1)
    probs = probe.probabilities(100 * test_x)
    assert probs.unique().numel() == probs.numel() and float(probs.min()) > 0 and float(probs.max()) < 1
    assert label_auroc(probs, test_y) > 0.99
