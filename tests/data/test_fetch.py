"""Cache folders are built once, atomically, and a killed build's staging leftovers are removed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from rama.data.fetch import SourceUnavailableError, build_once, fetch_debian
from rama.errors import RamaError
from rama.locking import lock_path


def write_file(staging: Path) -> None:
    (staging / "payload.txt").write_text("built")


def test_stale_staging_from_a_killed_build_is_removed(tmp_path: Path) -> None:
    final = tmp_path / "thing"
    (tmp_path / ".thing.k3j9x2ab").mkdir()  # what mkdtemp left when the build was killed
    (tmp_path / ".thing.k3j9x2ab" / "half.bin").write_bytes(b"\0" * 100)
    (tmp_path / ".thing.q8w7e6_d.tmp").write_text("half a file")
    (tmp_path / ".thing.notes").mkdir()  # not a staging name: left alone
    (tmp_path / ".other.a1b2c3de").mkdir()  # another target's staging: not ours to remove
    assert build_once(final, write_file) == final
    assert (final / "payload.txt").read_text() == "built"
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".other.a1b2c3de", ".thing.notes", "thing"]  # the lock goes with its holder


def test_a_failed_build_leaves_nothing_and_the_next_one_succeeds(tmp_path: Path) -> None:
    final = tmp_path / "thing"

    def fail(staging: Path) -> None:
        (staging / "half.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        build_once(final, fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    build_once(final, write_file)
    assert (final / "payload.txt").is_file()


def test_done_folders_are_kept_and_unfinished_ones_replaced(tmp_path: Path) -> None:
    final = tmp_path / "thing"
    final.mkdir()
    (final / "stray.txt").write_text("no marker: unfinished")

    def done(path: Path) -> bool:
        return (path / "payload.txt").is_file()

    build_once(final, write_file, done=done)
    assert sorted(p.name for p in final.iterdir()) == ["payload.txt"]
    build_once(final, lambda staging: pytest.fail("rebuilt a finished folder"), done=done)


def test_concurrent_builders_build_once(tmp_path: Path) -> None:
    final, calls = tmp_path / "thing", []

    def slow(staging: Path) -> None:
        calls.append(1)
        time.sleep(0.3)
        write_file(staging)

    threads = [threading.Thread(target=build_once, args=(final, slow)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and (final / "payload.txt").read_text() == "built"
    assert not lock_path(final).exists()  # released and removed by the one builder


def test_a_debian_package_without_apt_is_a_rama_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get, no dpkg-deb
    with pytest.raises(SourceUnavailableError, match="needs apt-get and dpkg-deb") as caught:
        fetch_debian("wordnet-base", tmp_path / "sources")
    assert isinstance(caught.value, RamaError)
    assert not (tmp_path / "sources" / "wordnet-base").exists()
    assert list((tmp_path / "sources").iterdir()) == []  # no staging, and the lock went with its holder
