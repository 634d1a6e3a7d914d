"""How `rama` fails and what its help says: a user's mistake is one line, a bug keeps its traceback and
asks for a report, `--debug` shows every traceback, Ctrl-C is one line and exit status 130; every
command's help shows real defaults, once each, and a bare command group prints its own commands."""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from cli_helpers import rama_in_process
from rama.cli.main import build_parser
from rama.cli.steer import ExportOptions, RunOptions, SweepOptions
from rama.cli.steer import _parser as steer_parser

RAMA = [sys.executable, "-m", "rama"]


def rama(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RAMA, *args], capture_output=True, text=True, env=env)


def test_python_dash_m_rama_is_the_command() -> None:
    result = rama("--version")
    assert result.returncode == 0 and result.stdout.startswith("rama ")


def test_a_user_mistake_is_one_line_and_debug_shows_its_traceback() -> None:
    result = rama("toys", "train", "grokking", "--out", "x")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "rama: error: unknown toy 'grokking'; choose one of induction-2l, induction-1l, ioi, superposition"
    ]
    debug = rama("--debug", "toys", "train", "grokking", "--out", "x")
    assert debug.returncode == 1 and debug.stderr.startswith("Traceback (most recent call last):")
    assert "ConfigError" in debug.stderr and debug.stderr.strip().endswith("ioi, superposition")
    at_the_end = rama_in_process("toys", "train", "grokking", "--out", "x", "--debug")  # also accepted last
    assert at_the_end.returncode == 1 and "Traceback" in at_the_end.stderr


def test_a_bug_keeps_its_traceback_and_asks_for_a_report() -> None:
    """A programming error (here a TypeError planted in `rama toys list`) is not dressed up as a message."""
    code = (
        "import sys, rama.cli.toys as toys\n"
        "def broken(args): return len(None)\n"
        "toys.run_list = broken\n"
        "from rama.cli.main import main\n"
        "sys.exit(main(['toys', 'list']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback (most recent call last):" in result.stderr and "TypeError" in result.stderr
    assert "in broken" in result.stderr  # the frame where the bug is
    assert result.stderr.strip().splitlines()[-1].startswith("rama: this is a bug in rama")


def restore_ctrl_c() -> None:
    """In the child: Ctrl-C's default action. A test run started in the background inherits an
    ignored SIGINT, which Python then keeps ignoring; a user at a terminal never has that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def read_until(process: subprocess.Popen[bytes], marker: bytes, seconds: float) -> bytes:
    """What the process wrote to stderr until `marker` appeared (or `seconds` passed), never blocking."""
    assert process.stderr is not None
    seen, deadline = b"", time.monotonic() + seconds
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([process.stderr], [], [], 0.5)
        if ready:
            seen += os.read(process.stderr.fileno(), 4096)
    return seen


def test_ctrl_c_is_one_line_and_exit_status_130(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [*RAMA, "toys", "train", "induction-1l", "--steps", "100000", "--out", str(tmp_path / "toy")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=restore_ctrl_c,
    )
    try:
        seen = read_until(process, b"loss=", 120)  # the training progress bar: it is training
        assert b"loss=" in seen, seen[-500:]
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
    finally:
        process.kill()  # never leave a 100,000-step run behind a failed assertion
    assert process.returncode == 130
    assert "Traceback" not in rest.decode() and "interrupted" in rest.decode().strip().splitlines()[-1]


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser by its name, the steer family (which parses its own words) included."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser) -> None:
        found[parser.prog] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    walk(child)

    walk(build_parser())
    for name, options in (
        ("steer", RunOptions),
        ("steer sweep", SweepOptions),
        ("steer export", ExportOptions),
    ):
        found[f"rama {name}"] = steer_parser(name, options, "")
    return found


def test_every_help_shows_real_defaults_once() -> None:
    every = parsers()
    assert {"rama run", "rama sae train", "rama toys train", "rama steer export", "rama demo"} <= set(every)
    for prog, parser in every.items():
        text = parser.format_help()
        assert "_MISSING_TYPE" not in text and "(default: None)" not in text, prog
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.help:
                expanded = formatter._expand_help(action)
                assert expanded.count("(default:") <= 1, (prog, action.dest, expanded)
                assert "(default: )" not in expanded, (prog, action.dest)
            if not action.option_strings:  # positional: required, so no default to show
                assert "(default" not in (action.help or ""), (prog, action.dest)
    run_help = " ".join(every["rama run"].format_help().split())
    assert "site name or glob to show; repeatable --top-k" in run_help  # a list's empty default: not shown


def test_a_bare_group_prints_its_own_commands() -> None:
    toys = rama("toys")
    assert toys.returncode == 2 and toys.stdout.startswith("usage: rama toys")
    assert (
        "train" in toys.stdout and "list" in toys.stdout and "Mechanistic interpretability" not in toys.stdout
    )
    sae = rama_in_process("sae")
    assert sae.returncode == 2 and sae.stdout.startswith("usage: rama sae") and "eval" in sae.stdout
    steer = rama_in_process("steer")
    assert (
        steer.returncode == 2
        and steer.stdout.startswith("usage: rama steer")
        and "steer sweep" in steer.stdout
    )
    top = rama_in_process()
    assert top.returncode == 2 and top.stdout.startswith("usage: rama ") and "--debug" in top.stdout
