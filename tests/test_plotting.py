"""Figures are saved whole, under a unique staging name, with the umask's mode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rama.plotting import pyplot, save_figure

pytest.importorskip("matplotlib")


def test_save_figure_writes_a_png_and_leaves_no_staging(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        plt = pyplot()
        figure, axis = plt.subplots()
        axis.plot([0, 1], [1, 0])
        (tmp_path / ".plot.tmp.png").write_text("another writer's staging file")  # the old fixed name
        out = save_figure(figure, tmp_path / "plot.png")
    finally:
        os.umask(previous)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == [".plot.tmp.png", "plot.png"]
    assert (tmp_path / ".plot.tmp.png").read_text() == "another writer's staging file"
    assert not plt.fignum_exists(figure.number)  # closed
