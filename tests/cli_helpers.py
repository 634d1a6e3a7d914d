"""Running the `rama` command in tests: as a user does (a subprocess), or in this process when a test
makes many calls (each subprocess pays ≈ 5 s of imports)."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys


def rama_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rama.cli.main", *args], capture_output=True, text=True)


def rama_in_process(*args: str) -> subprocess.CompletedProcess[str]:
    from rama.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
