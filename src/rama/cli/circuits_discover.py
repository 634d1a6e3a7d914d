"""`rama circuits discover MODEL --task TASK --method eap|eap-ig|acdc` and `rama circuits render GRAPH`."""

from __future__ import annotations

import argparse


def register_discover(commands: argparse._SubParsersAction) -> None:
    """Placeholder until the discovery command lands."""


def register_render(commands: argparse._SubParsersAction) -> None:
    """`rama circuits render GRAPH.json [--out page.html] [--svg]`: the graph as a self-contained HTML
    page (inline SVG, hover tooltips); `--svg` also writes the bare SVG beside it, and an `--out`
    ending in .svg writes only the SVG."""
    from pathlib import Path

    from rama.circuits.graph_render import GraphDrawing
    from rama.cli.options import add_options, from_args
    from rama.errors import OutputError

    def run_render(namespace: argparse.Namespace) -> int:
        from rama.circuits.graph import CircuitGraph
        from rama.circuits.graph_render import drawn_edges, save_graph_page

        drawing = from_args(GraphDrawing, namespace)
        out = Path(namespace.out or Path(namespace.graph).with_suffix(".html"))
        if out.is_dir():
            raise OutputError(f"--out {str(out)!r} is a folder; give the page's file name, e.g. circuit.html")
        graph = CircuitGraph.load(namespace.graph)
        settings = (drawing.max_edges, drawing.circuit_only, drawing.all_nodes)
        written = [save_graph_page(graph, out, *settings)]
        if namespace.svg and out.suffix.lower() != ".svg":
            written.append(save_graph_page(graph, out.with_suffix(".svg"), *settings))
        drawn = drawn_edges(graph, drawing.max_edges, drawing.circuit_only)
        in_circuit = sum(bool(graph.in_circuit[i]) for i in drawn)
        for path in written:
            print(
                f"wrote {path} ({len(drawn):,} of {graph.n_edges:,} edges drawn, {in_circuit:,} in the circuit)"
            )
        return 0

    render = commands.add_parser(
        "render",
        help="draw a circuit graph (JSON from `rama circuits discover`) as an HTML page or SVG",
        epilog="example: rama circuits render ioi-eap.json --out ioi-eap.html --max-edges 200",
    )
    render.add_argument("graph", help="a circuit graph JSON file (CircuitGraph.save)")
    render.add_argument(
        "--out", default="", help="the page to write (default: the graph's name with .html); a name ending "
        "in .svg writes only the SVG"
    )  # fmt: skip
    render.add_argument("--svg", action="store_true", help="also write the bare SVG beside the page")
    add_options(render, GraphDrawing)
    render.set_defaults(handler=run_render)
