"""`rama circuits discover MODEL --task TASK --method eap|eap-ig|acdc` and `rama circuits render GRAPH`."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rama.cli.options import add_options, from_args, option
from rama.errors import ConfigError, OutputError

METHOD_NAMES = ("eap", "eap-ig", "acdc")
TASK_NAMES = ("ioi", "induction")


@dataclass(frozen=True)
class DiscoverOptions:
    model: str = option("smollm2-135m", "built-in name, local HF folder or hub id", positional=True)
    task: str = option("ioi", f"built-in task: {', '.join(TASK_NAMES)}")
    method: str = option("eap", f"discovery method: {', '.join(METHOD_NAMES)}")
    n: int = option(64, "prompts (clean/corrupted pairs)")
    batch: int = option(16, "prompts per forward pass (memory stays bounded by this)")
    seed: int = option(0, "seed of the prompts")
    steps: int = option(5, "EAP-IG: integration steps from the corrupted to the clean input")
    threshold: float = option(
        0.01, "ACDC: τ, the largest damage increase an edge may cause and still be removed"
    )
    damage: str = option("kl", "ACDC: 'kl' (KL from the clean run at the answer position) or 'metric'")
    max_seconds: float = option(
        0.0, "ACDC: stop after this long (0 = run to the end); untested edges stay in"
    )
    edges: int = option(0, "EAP/EAP-IG: circuit of the top-N edges by |score| (0: no circuit chosen)")
    curve: bool = option(False, "measure the faithfulness curve (MIB's CPR and CMD) with real patching")
    out: str = option("", "folder for graph.json, graph.html and (with --curve) faithfulness.json")
    top: int = option(10, "edges listed in the text output")
    json: bool = option(False, "print the summary as JSON")

    def __post_init__(self) -> None:
        if self.task not in TASK_NAMES or self.method not in METHOD_NAMES:
            raise ConfigError(
                f"--task must be one of {', '.join(TASK_NAMES)} and --method one of {', '.join(METHOD_NAMES)}; "
                f"got --task {self.task!r} --method {self.method!r}"
            )
        if min(self.n, self.batch, self.steps) < 1 or self.edges < 0 or self.max_seconds < 0:
            raise ConfigError("--n, --batch and --steps must be ≥ 1; --edges and --max-seconds ≥ 0")
        if self.out and Path(self.out).is_file():
            raise OutputError(f"--out {self.out!r} is a file; give a folder")


def register_discover(commands: argparse._SubParsersAction) -> None:
    """`rama circuits discover MODEL --task TASK --method METHOD`: score every edge, choose a circuit."""
    parser = commands.add_parser(
        "discover",
        help="automated circuit discovery (EAP, EAP-IG, ACDC) on a built-in task",
        epilog="example: rama circuits discover smollm2-135m --task ioi --method eap-ig --edges 200 --curve --out ioi/",
    )
    add_options(parser, DiscoverOptions)
    parser.set_defaults(handler=lambda ns: run_discover(from_args(DiscoverOptions, ns)))


def run_discover(options: DiscoverOptions) -> int:
    from rama import load
    from rama.circuits.discovery import acdc, eap
    from rama.circuits.faithfulness import circuit_faithfulness, faithfulness_curve, top_edges
    from rama.circuits.tasks import TASKS

    model = load(options.model)
    task = TASKS[options.task](model, n=options.n, seed=options.seed, batch_size=options.batch)
    if options.method == "acdc":
        budget = options.max_seconds or None
        graph = acdc(model, task, options.threshold, damage=options.damage, max_seconds=budget)
    else:
        graph = eap(model, task, ig_steps=options.steps if options.method == "eap-ig" else 0)
        if options.edges:
            graph = top_edges(graph, min(options.edges, graph.n_edges))
    summary: dict[str, Any] = {**graph.info, "edges_total": graph.n_edges, "top": _top(graph, options.top)}
    if bool(graph.in_circuit.any()):
        kept = circuit_faithfulness(model, task, graph)
        summary.update(
            circuit_edges=kept.edges, faithfulness=kept.normalised, clean=kept.clean, corrupted=kept.corrupted
        )
    curve = faithfulness_curve(model, task, graph) if options.curve else None
    if curve is not None:
        summary.update(cpr=curve.cpr, cmd=curve.cmd)
    if options.out:
        _write(options.out, graph, curve)
    print(json.dumps(summary) if options.json else _text(summary))
    return 0


def _top(graph: Any, n: int) -> list[list[Any]]:
    order = graph.scores.nan_to_num().abs().argsort(descending=True)[:n].tolist()
    return [[graph.edges[i].name, round(float(graph.scores[i]), 5)] for i in order]


def _write(out: str, graph: Any, curve: Any) -> None:
    from rama.atomic import write_text
    from rama.circuits.graph_render import save_graph_page

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"wrote {graph.save(folder / 'graph.json')}")
    print(f"wrote {save_graph_page(graph, folder / 'graph.html')}")
    if curve is not None:
        write_text(folder / "faithfulness.json", json.dumps(curve.to_json()) + "\n")
        print(f"wrote {folder / 'faithfulness.json'}")


def _text(summary: dict[str, Any]) -> str:
    lines = [f"{summary['method']} on {summary['task']} ({summary['prompts']} prompts): {summary['edges_total']:,} edges "
             f"scored in {summary['seconds']:.1f} s"]  # fmt: skip
    if "circuit_edges" in summary:
        lines.append(f"circuit: {summary['circuit_edges']} edges keep {summary['faithfulness']:.1%} of the metric "
                     f"(clean {summary['clean']:.3f}, corrupted {summary['corrupted']:.3f})")  # fmt: skip
    if "cpr" in summary:
        lines.append(
            f"faithfulness curve: CPR {summary['cpr']:.3f} (higher is better), CMD {summary['cmd']:.3f} (lower)"
        )
    lines.append("top edges (score = metric change if patched alone):")
    lines += [f"  {name:28s} {score:+.4f}" for name, score in summary["top"]]
    return "\n".join(lines)


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
