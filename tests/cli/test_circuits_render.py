"""`rama circuits render GRAPH.json`: the page, the bare SVG, the options, and one-line errors."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from cli_helpers import rama_cli, rama_in_process
from rama.circuits.graph import CircuitGraph, model_graph

SVG = "{http://www.w3.org/2000/svg}"


def saved_graph(folder: Path) -> Path:
    """A 2-layer, 4-head graph with distinct scores and a 3-edge circuit, saved as JSON."""
    graph = model_graph(2, 4)
    scores = torch.linspace(-1.0, 1.0, graph.n_edges)
    circuit = torch.zeros(graph.n_edges, dtype=torch.bool)
    index = graph.edge_index()
    for name in ("input->a0.1<v>", "a0.1->a1.2<k>", "a1.2->logits"):
        circuit[index[name]] = True
    return (
        graph.with_scores(scores, model="toy", task="induction", method="eap")
        .with_circuit(circuit)
        .save(folder / "graph.json")
    )


def drawn(svg_text: str) -> list[str]:
    svg = ET.fromstring(svg_text)
    return [p.get("data-edge", "") for p in svg.iter(f"{SVG}path") if "edge" in p.get("class", "")]


def inline_svg(page: str) -> str:
    return page[page.index("<svg") : page.index("</svg>") + len("</svg>")]


def test_render_writes_the_page_and_the_svg(tmp_path: Path) -> None:
    path = saved_graph(tmp_path)
    graph = CircuitGraph.load(path)
    out = tmp_path / "pages" / "circuit.html"
    result = rama_in_process("circuits", "render", str(path), "--out", str(out), "--svg", "--max-edges", "12")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"wrote {out} (12 of {graph.n_edges} edges drawn, 3 in the circuit)",
        f"wrote {out.with_suffix('.svg')} (12 of {graph.n_edges} edges drawn, 3 in the circuit)",
    ]
    page = out.read_text()
    assert (
        page.startswith("<!doctype html>")
        and "Circuit graph · model toy · task induction · method eap" in page
    )
    svg_text = out.with_suffix(".svg").read_text()
    assert svg_text.startswith("<?xml") and len(drawn(svg_text)) == 12
    inline = ET.fromstring(inline_svg(page))  # the page holds the same drawing, enlarged (same viewBox)
    bare = ET.fromstring(svg_text)
    assert drawn(inline_svg(page)) == drawn(svg_text) and inline.get("viewBox") == bare.get("viewBox")
    assert float(inline.get("width", 0)) > float(bare.get("width", 0))
    strongest_others = graph.scores.abs().masked_fill(graph.in_circuit, -1).topk(9).indices.tolist()
    assert set(drawn(svg_text)) == {e.name for e in graph.circuit_edges()} | {
        graph.edges[i].name for i in strongest_others
    }
    only = rama_in_process(
        "circuits", "render", str(path), "--out", str(tmp_path / "c.svg"), "--circuit-only"
    )
    assert only.returncode == 0 and not (tmp_path / "c.html").exists()  # an .svg --out writes only the SVG
    assert sorted(drawn((tmp_path / "c.svg").read_text())) == sorted(e.name for e in graph.circuit_edges())
    default = rama_cli("circuits", "render", str(path))  # as a user runs it: beside the graph
    assert default.returncode == 0, default.stderr
    beside = inline_svg((tmp_path / "graph.html").read_text())
    assert len(drawn(beside)) == graph.n_edges  # 110 edges, under the default cap of 300: all drawn


def test_render_errors_are_one_line(tmp_path: Path) -> None:
    path = saved_graph(tmp_path)
    unscored = model_graph(2, 4).save(tmp_path / "unscored.json")
    cases = [
        ([str(tmp_path / "missing.json")], "cannot read a circuit graph"),
        ([str(unscored), "--circuit-only"], "no circuit"),
        ([str(path), "--max-edges", "0"], "--max-edges) must be at least 1"),
        ([str(path), "--out", str(tmp_path)], "is a folder"),
    ]
    for args, message in cases:
        result = rama_in_process("circuits", "render", *args)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
