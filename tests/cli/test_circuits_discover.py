"""`rama circuits discover`: the graph, its page and the faithfulness curve on the induction toy,
the JSON summary, and one-line errors for bad options."""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import rama_cli, rama_in_process
from rama.circuits.graph import CircuitGraph
from rama.toys import pretrained


def test_discover_writes_the_graph_page_and_curve(tmp_path: Path) -> None:
    toy = str(pretrained("induction-2l"))
    run = rama_in_process(
        "circuits", "discover", toy, "--task", "induction", "--method", "eap", "--n", "8", "--edges", "20",
        "--curve", "--out", str(tmp_path), "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    graph = CircuitGraph.load(tmp_path / "graph.json")
    assert summary["method"] == "eap" and summary["edges_total"] == graph.n_edges == 110
    assert summary["circuit_edges"] == int(graph.in_circuit.sum()) <= 20
    assert 0 <= summary["cpr"] <= 1 and summary["cmd"] >= 0
    curve = json.loads((tmp_path / "faithfulness.json").read_text())
    assert curve["cpr"] == summary["cpr"] and abs(curve["normalised"][-1] - 1) < 1e-4
    assert "<svg" in (tmp_path / "graph.html").read_text()
    assert summary["top"][0][0] == graph.edges[int(graph.scores.abs().argmax())].name


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    run = rama_cli("circuits", "discover", "smollm2-135m", "--task", "greater-than")
    assert run.returncode != 0 and "--task must be one of ioi, induction" in run.stderr
    assert "Traceback" not in run.stderr
    (tmp_path / "file").write_text("x")
    run = rama_cli("circuits", "discover", "smollm2-135m", "--out", str(tmp_path / "file"))
    assert run.returncode != 0 and "is a file; give a folder" in run.stderr
