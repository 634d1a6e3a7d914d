"""Atomic writes: whole files or nothing, with the modes the user's umask gives."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rama.atomic import check_empty_output, current_umask, staged_file, staged_folder, write_bytes, write_text
from rama.errors import OutputError, RamaError


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture
def umask_077() -> Iterator[None]:
    previous = os.umask(0o077)
    yield
    os.umask(previous)


def test_current_umask_reads_without_changing_it(umask_022: None) -> None:
    assert current_umask() == 0o022
    assert current_umask() == 0o022  # reading twice: still the same, nothing was replaced
    os.umask(0o027)
    assert current_umask() == 0o027


def test_files_and_folders_follow_umask_022(tmp_path: Path, umask_022: None) -> None:
    text = write_text(tmp_path / "a" / "result.json", "{}")
    data = write_bytes(tmp_path / "blob.bin", b"\x00\x01")
    with staged_folder(tmp_path / "out") as staging:
        (staging / "x.txt").write_text("x")
    assert text.stat().st_mode & 0o777 == 0o644
    assert data.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
    assert data.read_bytes() == b"\x00\x01"


def test_files_and_folders_follow_umask_077(tmp_path: Path, umask_077: None) -> None:
    text = write_text(tmp_path / "result.json", "{}")
    with staged_folder(tmp_path / "out") as staging:
        (staging / "x.txt").write_text("x")
    assert text.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o700


def test_failed_write_leaves_the_old_file_and_no_staging(tmp_path: Path) -> None:
    target = write_text(tmp_path / "keep.txt", "old")
    with pytest.raises(RuntimeError), staged_file(target) as staging:
        staging.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_staging_names_are_unique_and_keep_the_suffix(tmp_path: Path) -> None:
    with (
        staged_file(tmp_path / "fig.png", suffix=".png") as one,
        staged_file(tmp_path / "fig.png", ".png") as two,
    ):
        assert one != two
        assert one.suffix == two.suffix == ".png"
        assert one.parent == two.parent == tmp_path
        one.write_text("1")
        two.write_text("2")
    assert (tmp_path / "fig.png").read_text() == "1"  # the outer block renames last; its file wins, whole
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_staged_folder_refuses_a_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with pytest.raises(OutputError, match="already holds files") as caught, staged_folder(tmp_path / "out"):
        pass
    assert isinstance(caught.value, RamaError) and isinstance(caught.value, FileExistsError)
    with staged_folder(tmp_path / "out", overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left behind


def test_check_empty_output(tmp_path: Path) -> None:
    assert check_empty_output(tmp_path / "new") == tmp_path / "new"  # absent: fine
    (tmp_path / "empty").mkdir()
    check_empty_output(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    for taken in (tmp_path / "file", tmp_path):
        with pytest.raises(OutputError, match="already holds files"):
            check_empty_output(taken)
