"""Draw a `CircuitGraph` as a self-contained SVG, or an HTML page around it, that a person can read.

Reading order: input at the top, logits at the bottom, layer 0 first, so every edge points down the
page. The IOI paper's circuit figure reads from the input on the left to the output on the right, and
ACDC's and EAP-IG's graphviz figures from the embeddings at the top to the logits at the bottom: input
first, output last, which on a page of layers means top to bottom. Within a layer the heads share one
row (head h always in column h, so a layer looks the same whatever is drawn) and the MLP sits half a
row lower, in the column after the last head, because it reads the heads' output. Feature nodes go
in the MLP's row, after it.

A full graph has tens of thousands of edges (SmolLM2-135M: about 70,000), so at most `max_edges` are
drawn: the circuit's edges first, strongest first, then the strongest others by |score|. Width grows
linearly with |score|, colour gives the sign, circuit edges are opaque and the rest faint. An edge
into a head ends on the head's top side at the left (q), middle (k) or right (v); small ticks there
show which ports a head has (in a grouped-query model only the first head of each key/value group
has k and v). Large graphs show only the nodes that drawn edges touch; empty layers keep a thin row.

Every string from the graph (node names, info values) passes through ElementTree or `html.escape`,
so markup in a graph renders as text; the page's script reads data attributes and writes only
`textContent`.
"""

from __future__ import annotations

import html
import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rama.atomic import write_text
from rama.circuits.graph import CircuitGraph, Edge, Node
from rama.errors import ConfigError, InputError

SVG_NAMESPACE = "http://www.w3.org/2000/svg"
POSITIVE, NEGATIVE, UNSCORED = "#2166ac", "#c2452d", "#808080"
PORT_OFFSET = {"q": 0.2, "k": 0.5, "v": 0.8, "": 0.5}  # where on a box's top side an edge ends
MIN_WIDTH, MAX_WIDTH, UNSCORED_WIDTH = 0.6, 7.0, 1.5  # stroke widths, px
CIRCUIT_OPACITY, CONTEXT_OPACITY = 0.9, 0.22
ALL_NODES_UP_TO = 80  # graphs with at most this many nodes show every node
BOX_W, BOX_H, COLUMN = 52.0, 20.0, 62.0  # node box and column pitch, px
LOWER_ROW = 34.0  # from a layer's head row down to its MLP row
LAYER_GAP, EMPTY_LAYER = 26.0, 14.0  # space below a layer's last row; height of a layer with nothing shown
LEFT, RIGHT, HEADER = 70.0, 24.0, 100.0  # margins; the title and legend sit in the header
MIN_CANVAS = 760.0  # px wide at least, for the legend
PAGE_WIDTH, PAGE_HEIGHT, PAGE_ZOOM = 1100.0, 1300.0, 1.6  # the page enlarges small drawings up to this
MAX_EDGES_HELP = "draw at most this many edges: the circuit's (strongest first), then the strongest others"
ALL_NODES_HELP = (
    f"show every node, not only the drawn edges' ends (default: for graphs up to {ALL_NODES_UP_TO} nodes)"
)
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"


@dataclass(frozen=True)
class GraphDrawing:
    """What to draw; the fields double as `rama circuits render` options (help in their metadata)."""

    max_edges: int = field(default=300, metadata={"help": MAX_EDGES_HELP})
    circuit_only: bool = field(default=False, metadata={"help": "draw only the circuit's edges"})
    all_nodes: bool | None = field(default=None, metadata={"help": ALL_NODES_HELP})

    def __post_init__(self) -> None:
        if self.max_edges < 1:
            raise ConfigError(f"max_edges (--max-edges) must be at least 1; got {self.max_edges}")


def drawn_edges(graph: CircuitGraph, max_edges: int = 300, circuit_only: bool = False) -> list[int]:
    """Indices of the edges to draw, in painting order (context edges, then circuit edges, each weakest
    first so the strongest lie on top): at most `max_edges`, the circuit's first (strongest first),
    then, unless `circuit_only`, the strongest scored others."""
    GraphDrawing(max_edges, circuit_only)  # checks the settings
    magnitude = graph.scores.float().abs().nan_to_num(nan=-1.0)  # [n_edges]; unscored below every score
    order = torch.argsort(magnitude, descending=True, stable=True)
    circuit_mask = graph.in_circuit.bool()
    circuit = order[circuit_mask[order]]
    if circuit_only and circuit.numel() == 0:
        raise InputError(
            "the graph has no circuit (no edge has in_circuit set): drop circuit_only (--circuit-only) to "
            "see the strongest edges, or select a circuit first"
        )
    chosen = circuit[:max_edges]
    if not circuit_only:
        others = order[~circuit_mask[order] & (magnitude[order] >= 0)]
        chosen = torch.cat([chosen, others[: max_edges - chosen.numel()]])
    return sorted(chosen.tolist(), key=lambda i: (bool(circuit_mask[i]), float(magnitude[i])))


def edge_width(magnitude: float, largest: float) -> float:
    """Stroke width for |score| `magnitude`: linear from MIN_WIDTH (0) to MAX_WIDTH (`largest`, the
    largest finite |score| drawn; an infinite one gets MAX_WIDTH too)."""
    if math.isnan(magnitude) or largest <= 0:
        return MAX_WIDTH if magnitude == math.inf else UNSCORED_WIDTH
    return MIN_WIDTH + (MAX_WIDTH - MIN_WIDTH) * min(magnitude / largest, 1.0)


@dataclass(frozen=True)
class GraphLayout:
    """Where the shown nodes go: each box's top-left corner, each layer's label row, the canvas size."""

    boxes: dict[str, tuple[float, float]]  # node name -> (x, y) of its box's top-left corner
    layer_bands: list[tuple[int, float, float, bool]]  # (layer, top, height, anything shown); they tile
    label_x: float  # where the layer labels start
    width: float
    height: float


def shown_nodes(graph: CircuitGraph, edges: list[int], all_nodes: bool | None) -> list[Node]:
    """Every node for small graphs (or when `all_nodes`), else input, logits and the drawn edges' ends."""
    if all_nodes is None:
        all_nodes = len(graph.nodes) <= ALL_NODES_UP_TO
    if all_nodes:
        return list(graph.nodes)
    touched = {end for i in edges for end in (graph.edges[i].upstream, graph.edges[i].downstream)}
    return [n for n in graph.nodes if n.name in touched or n.kind in ("input", "logits")]


def in_lower_row(node: Node) -> bool:
    return node.kind in ("mlp", "feature")


def node_columns(graph: CircuitGraph, shown: list[Node]) -> dict[str, float]:
    """Column of each shown node: heads by index, the MLP after the last head, features after the MLP
    (in graph order), input and logits centred over the heads."""
    n_heads = max(((n.index or 0) + 1 for n in graph.nodes if n.kind == "head"), default=0)
    columns: dict[str, float] = {}
    features_in_layer: dict[int, int] = {}
    for node in shown:
        if node.kind == "head":
            columns[node.name] = float(node.index or 0)
        elif node.kind == "mlp":
            columns[node.name] = float(n_heads)
        elif node.kind == "feature":
            rank = features_in_layer.get(node.layer, 0)
            features_in_layer[node.layer] = rank + 1
            columns[node.name] = float(n_heads + 1 + rank)
        else:
            columns[node.name] = max(n_heads - 1, 0) / 2
    return columns


def layout_nodes(graph: CircuitGraph, shown: list[Node]) -> GraphLayout:
    """Rows top to bottom by layer (every layer of the graph keeps a row, a thin one when nothing in it
    is shown), columns from `node_columns`."""
    columns = node_columns(graph, shown)
    content = (max(columns.values(), default=0) + 1) * COLUMN
    width = max(LEFT + content + RIGHT, MIN_CANVAS)
    left = LEFT + (width - LEFT - content - RIGHT) / 2  # narrow graphs sit in the middle
    boxes: dict[str, tuple[float, float]] = {}
    bands: list[tuple[int, float, float, bool]] = []
    y = HEADER
    for layer in sorted({n.layer for n in graph.nodes}):
        here = [n for n in shown if n.layer == layer]
        row = y + LAYER_GAP / 2  # the layer's band runs from y to y + step; its boxes sit inside
        for node in here:
            boxes[node.name] = (
                left + columns[node.name] * COLUMN,
                row + (LOWER_ROW if in_lower_row(node) else 0),
            )
        step = EMPTY_LAYER if not here else BOX_H + LAYER_GAP
        step += LOWER_ROW if any(in_lower_row(n) for n in here) else 0
        if any(n.kind in ("head", "mlp", "feature") for n in graph.nodes if n.layer == layer):
            bands.append((layer, y, step, bool(here)))
        y += step
    return GraphLayout(boxes, bands, left - LEFT + 12, width, y + 10)


def svg_child(parent: ET.Element, tag: str, text: str | None = None, **attributes: object) -> ET.Element:
    """A child element; attribute names use `_` for `-` and a trailing `_` for Python keywords."""
    names = {k.rstrip("_").replace("_", "-"): v for k, v in attributes.items()}
    element = ET.SubElement(
        parent, tag, {k: f"{round(v, 2):g}" if isinstance(v, float) else str(v) for k, v in names.items()}
    )
    if text is not None:
        element.text = text
    return element


def svg_line(
    parent: ET.Element,
    x1: float,
    y1: float,
    x2: float,
    y2: float,
    colour: str,
    width: float,
    opacity: float = 1.0,
) -> ET.Element:
    return svg_child(
        parent,
        "line",
        x1=x1,
        y1=y1,
        x2=x2,
        y2=y2,
        stroke=colour,
        stroke_width=round(width, 2),
        stroke_opacity=opacity,
    )


def svg_text(
    parent: ET.Element,
    text: str,
    x: float,
    y: float,
    size: int = 11,
    colour: str = "#333",
    **attributes: object,
) -> ET.Element:
    return svg_child(parent, "text", text, x=x, y=y, font_size=size, fill=colour, **attributes)


def score_text(value: float) -> str:
    return "unscored" if math.isnan(value) else f"{value:+.3g}"


def graph_title(graph: CircuitGraph) -> str:
    """'Circuit graph · model … · task … · method …' from whichever of those `info` holds (a model
    given as an absolute path by its folder's name; the page's table keeps the whole path)."""
    shown = {key: str(graph.info[key]) for key in ("model", "task", "method") if key in graph.info}
    if shown.get("model", "").startswith("/"):
        shown["model"] = Path(shown["model"]).name
    parts = [f"{key} {value}" for key, value in shown.items()]
    return " · ".join(["Circuit graph", *parts])


def draw_edge(svg: ET.Element, graph: CircuitGraph, index: int, layout: GraphLayout, largest: float) -> None:
    """One edge as a cubic curve from the upstream box's bottom centre to its port on the downstream box."""
    edge: Edge = graph.edges[index]
    score = float(graph.scores[index])
    circuit = bool(graph.in_circuit[index])
    ux, uy = layout.boxes[edge.upstream]
    dx, dy = layout.boxes[edge.downstream]
    x1, y1 = ux + BOX_W / 2, uy + BOX_H
    x2, y2 = dx + BOX_W * PORT_OFFSET.get(edge.port, 0.5), dy
    bend = max((y2 - y1) / 2, 12.0)
    path = svg_child(
        svg,
        "path",
        class_=f"edge {'circuit' if circuit else 'context'}",
        d=f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + bend:.1f} {x2:.1f},{y2 - bend:.1f} {x2:.1f},{y2:.1f}",
        fill="none",
        stroke=UNSCORED if math.isnan(score) else POSITIVE if score >= 0 else NEGATIVE,
        stroke_width=round(edge_width(abs(score), largest), 2),
        stroke_opacity=CIRCUIT_OPACITY if circuit else CONTEXT_OPACITY,
        stroke_linecap="round",
        data_edge=edge.name,
        data_from=edge.upstream,
        data_to=edge.downstream,
        data_port=edge.port,
        data_score="nan" if math.isnan(score) else repr(score),
    )
    svg_child(
        path, "title", f"{edge.name} · score {score_text(score)}{' · in the circuit' if circuit else ''}"
    )


def draw_node(
    svg: ET.Element, node: Node, xy: tuple[float, float], in_circuit: bool, ports: set[str]
) -> None:
    """A labelled box: highlighted when the circuit touches it; heads get a tick per input port."""
    x, y = xy
    circuit_class = " in-circuit" if in_circuit else ""
    group = svg_child(svg, "g", class_=f"node {node.kind}{circuit_class}", data_node=node.name)
    where = "" if node.kind in ("input", "logits") else f", layer {node.layer}"
    svg_child(group, "title", f"{node.name} ({node.kind}{where}){' · in the circuit' if in_circuit else ''}")
    ends = node.kind in ("input", "logits")
    fill = "#3b3b3b" if ends else "#ffe49a" if in_circuit else "#f3f3f3"
    stroke, width = ("#222", 1.6) if in_circuit else ("#aaa", 0.8)
    svg_child(
        group,
        "rect",
        x=x,
        y=y,
        width=BOX_W,
        height=BOX_H,
        rx=9 if node.kind == "mlp" else 3,
        fill=fill,
        stroke=stroke,
        stroke_width=width,
    )
    for port in sorted(ports & {"q", "k", "v"}):
        tick = x + BOX_W * PORT_OFFSET[port]
        svg_line(group, tick, y - 3, tick, y, "#555", 1.0)
    colour = "#fff" if ends else "#111" if in_circuit else "#777"
    svg_text(group, node.name, x + BOX_W / 2, y + BOX_H * 0.7, 10, colour, text_anchor="middle")


def draw_legend(svg: ET.Element, largest: float) -> None:
    """Colour, opacity, width and port conventions, in two rows under the title."""
    y, x = 62.0, 20.0
    for colour, opacity, text in (
        (POSITIVE, CIRCUIT_OPACITY, "circuit edge, positive score"),
        (NEGATIVE, CIRCUIT_OPACITY, "negative score"),
        (POSITIVE, CONTEXT_OPACITY, "edge outside the circuit"),
    ):
        svg_line(svg, x, y, x + 26, y, colour, 3.0, opacity)
        svg_text(svg, text, x + 32, y + 4)
        x += 50 + 6.2 * len(text)
    svg_child(
        svg, "rect", x=x, y=y - 8, width=26, height=14, rx=3, fill="#ffe49a", stroke="#222", stroke_width=1.6
    )
    svg_text(svg, "node in the circuit", x + 32, y + 4)
    y, x = 90.0, 20.0
    if largest > 0:
        svg_text(svg, "width ∝ |score|:", x, y + 4)
        x += 98
        for share in (1.0, 0.5, 0.1):
            svg_line(svg, x, y, x + 26, y, POSITIVE, edge_width(share * largest, largest), CIRCUIT_OPACITY)
            svg_text(svg, f"{share * largest:.3g}", x + 30, y + 4)
            x += 84
    for port in ("q", "k", "v"):
        tick = x + BOX_W * PORT_OFFSET[port]
        svg_line(svg, tick, y - 12, tick, y - 4, "#555", 1.5)
        svg_text(svg, port, tick, y - 14, 9, text_anchor="middle")
    svg_child(svg, "rect", x=x, y=y - 4, width=BOX_W, height=12, rx=2, fill="#f3f3f3", stroke="#aaa")
    svg_text(svg, "a head's q, k and v inputs (ticks: the ports it has)", x + BOX_W + 8, y + 6)


def draw_header(
    svg: ET.Element, graph: CircuitGraph, edges: list[int], shown: list[Node], largest: float
) -> None:
    """Title (from `info`), what was drawn out of what, and the legend."""
    svg_text(svg, graph_title(graph), 20.0, 24.0, 16, "#111", font_weight="bold")
    in_circuit = sum(bool(graph.in_circuit[i]) for i in edges)
    svg_text(
        svg,
        f"{len(edges):,} of {graph.n_edges:,} edges drawn ({in_circuit:,} of the circuit's "
        f"{int(graph.in_circuit.sum()):,}); largest |score| drawn {largest:.3g}; "
        f"{len(shown):,} of {len(graph.nodes):,} nodes shown",
        20.0,
        42.0,
        colour="#555",
    )
    draw_legend(svg, largest)


def draw_layer_bands(svg: ET.Element, layout: GraphLayout) -> None:
    """Each layer's label, and a faint band behind every other layer so a box's layer is plain to see
    (the MLP sits half a row below its layer's heads)."""
    for layer, top, height, _ in layout.layer_bands:
        if layer % 2 == 0:
            x, width = layout.label_x - 6, layout.width - layout.label_x
            svg_child(svg, "rect", class_="band", x=x, y=top, width=width, height=height, fill="#f1f3f8")
    for layer, top, _, anything in layout.layer_bands:
        size, colour, down = (10, "#444", LAYER_GAP / 2 + BOX_H * 0.7) if anything else (8, "#aaa", 10.0)
        svg_text(svg, f"layer {layer}", layout.label_x, top + down, size, colour)


def render_svg(
    graph: CircuitGraph, max_edges: int = 300, circuit_only: bool = False, all_nodes: bool | None = None
) -> str:
    """The graph as one SVG document (no external references): see the module docstring for the
    layout. `all_nodes` None shows every node of graphs up to ALL_NODES_UP_TO nodes, else only those
    the drawn edges touch."""
    return ET.tostring(svg_drawing(graph, max_edges, circuit_only, all_nodes), encoding="unicode")


def svg_drawing(
    graph: CircuitGraph, max_edges: int, circuit_only: bool, all_nodes: bool | None
) -> ET.Element:
    """`render_svg`'s tree."""
    edges = drawn_edges(graph, max_edges, circuit_only)
    shown = shown_nodes(graph, edges, all_nodes)
    layout = layout_nodes(graph, shown)
    magnitudes = [abs(float(graph.scores[i])) for i in edges]
    largest = max((m for m in magnitudes if math.isfinite(m)), default=0.0)
    width, height = f"{layout.width:.0f}", f"{layout.height:.0f}"
    frame = {"width": width, "height": height, "viewBox": f"0 0 {width} {height}"}
    svg = ET.Element("svg", {"xmlns": SVG_NAMESPACE, "class": "circuit-graph", "font-family": FONT, **frame})
    svg_child(svg, "rect", x=0, y=0, width=width, height=height, fill="#fff")
    draw_header(svg, graph, edges, shown, largest)
    draw_layer_bands(svg, layout)
    for index in edges:
        draw_edge(svg, graph, index, layout, largest)
    in_circuit = set(graph.circuit_nodes())
    ports: dict[str, set[str]] = {}
    for edge in graph.edges:
        ports.setdefault(edge.downstream, set()).add(edge.port)
    for node in shown:
        draw_node(svg, node, layout.boxes[node.name], node.name in in_circuit, ports.get(node.name, set()))
    return svg


PAGE_STYLE = """
body { font-family: DejaVu Sans, Helvetica, Arial, sans-serif; margin: 16px; color: #111; }
#hover { position: sticky; top: 0; background: #fff; padding: 4px 0; margin: 0; font-size: 13px;
  min-height: 1.3em; border-bottom: 1px solid #ddd; z-index: 1; }
.figure { overflow-x: auto; }
svg.circuit-graph .edge { cursor: pointer; }
svg.circuit-graph.focused .edge { stroke-opacity: 0.06; }
svg.circuit-graph.focused .edge.lit { stroke-opacity: 1; }
table.info { border-collapse: collapse; margin-top: 12px; font-size: 13px; }
table.info td { border-top: 1px solid #ddd; padding: 3px 12px 3px 0; vertical-align: top; }
"""

# Reads node names from data attributes and tooltips from <title> text; writes only textContent.
PAGE_SCRIPT = """
(() => {
  const svg = document.querySelector("svg.circuit-graph");
  const out = document.getElementById("hover");
  const idle = out.textContent;
  const edges = Array.from(svg.querySelectorAll(".edge"));
  const say = (element) => { out.textContent = element.querySelector("title").textContent; };
  const calm = () => {
    svg.classList.remove("focused");
    edges.forEach((edge) => edge.classList.remove("lit"));
    out.textContent = idle;
  };
  svg.querySelectorAll(".node").forEach((node) => {
    node.addEventListener("mouseenter", () => {
      const name = node.dataset.node;
      svg.classList.add("focused");
      const touches = (edge) => edge.dataset.from === name || edge.dataset.to === name;
      edges.forEach((edge) => edge.classList.toggle("lit", touches(edge)));
      say(node);
    });
    node.addEventListener("mouseleave", calm);
  });
  edges.forEach((edge) => {
    edge.addEventListener("mouseenter", () => say(edge));
    edge.addEventListener("mouseleave", calm);
  });
})();
"""


def info_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def graph_page(
    graph: CircuitGraph, max_edges: int = 300, circuit_only: bool = False, all_nodes: bool | None = None
) -> str:
    """An HTML page: a hover line (a node lights its edges; an edge shows its score), the
    inline SVG and the graph's `info` as a table. Self-contained: no external files or scripts."""
    svg = svg_drawing(graph, max_edges, circuit_only, all_nodes)
    width, height = float(svg.get("width", 1)), float(svg.get("height", 1))
    zoom = max(1.0, min(PAGE_ZOOM, PAGE_WIDTH / width, PAGE_HEIGHT / height))  # small drawings get bigger
    svg.set("width", f"{width * zoom:.0f}")
    svg.set("height", f"{height * zoom:.0f}")
    figure = ET.tostring(svg, encoding="unicode")
    title = html.escape(graph_title(graph))
    rows = "\n".join(
        f"<tr><td>{html.escape(str(key))}</td><td>{html.escape(info_text(value))}</td></tr>"
        for key, value in graph.info.items()
    )
    return (
        f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
        f"<style>{PAGE_STYLE}</style>\n</head>\n<body>\n"
        '<p id="hover">Hover a node to light its edges, or an edge to see its score.</p>\n'
        f'<div class="figure">{figure}</div>\n<table class="info">\n{rows}\n</table>\n'
        f"<script>{PAGE_SCRIPT}</script>\n</body>\n</html>\n"
    )


def save_graph_page(
    graph: CircuitGraph,
    path: str | os.PathLike[str],
    max_edges: int = 300,
    circuit_only: bool = False,
    all_nodes: bool | None = None,
) -> Path:
    """Write `graph_page` to `path` (atomically), or the bare SVG when `path` ends in .svg."""
    if Path(path).suffix.lower() == ".svg":
        svg = render_svg(graph, max_edges, circuit_only, all_nodes)
        return write_text(path, '<?xml version="1.0" encoding="UTF-8"?>\n' + svg + "\n")
    return write_text(path, graph_page(graph, max_edges, circuit_only, all_nodes))
