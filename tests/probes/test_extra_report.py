"""The reliability figure of `rama.probes.extra_report` from curves computed by hand."""

from __future__ import annotations

from pathlib import Path

import torch

from rama.probes.extra_report import reliability_figure
from rama.probes.probe_metrics import reliability


def test_reliability_figure_from_curves(tmp_path: Path) -> None:
    probs = torch.tensor([0.05, 0.1, 0.45, 0.55, 0.9, 0.95], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 0, 1, 1])
    curve = reliability(probs, labels)
    # 0.05 in the first bin, 0.45 in the fifth, 0.9 and 0.95 in the last
    assert curve.counts[0] == 1 and curve.counts[4] == 1 and curve.counts[9] == 2
    record = {**curve.__dict__, "ece": curve.ece(), "items": 6}
    result = {"site": "blocks.0.hook_resid_post", "curves": {"a": {"logistic": record, "diffmean": record}}}
    path = reliability_figure(result, tmp_path / "r.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
