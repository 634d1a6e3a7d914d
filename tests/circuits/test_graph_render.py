"""Drawing a circuit graph: valid SVG, every circuit edge drawn and marked, widths by |score|, rows by
layer, q/k/v ends, escaping of hostile names, the size cap on a SmolLM2-shaped graph, and the page in
a real headless Chromium (Debian's, through Playwright; skipped without it unless RAMA_REQUIRE_BROWSER).

Graphs come from `model_graph` with hand-set scores and circuits, so every expected value is known.
"""

from __future__ import annotations

import io
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import torch

from rama.circuits.graph import CircuitGraph, Edge, Node, model_graph
from rama.circuits.graph_render import (
    BOX_H,
    BOX_W,
    MAX_WIDTH,
    MIN_WIDTH,
    NEGATIVE,
    POSITIVE,
    drawn_edges,
    graph_page,
    render_svg,
    save_graph_page,
)
from rama.errors import ConfigError, InputError

SVG = "{http://www.w3.org/2000/svg}"
# An induction circuit on a 2-layer, 4-head graph: previous-token head 0.1, induction head 1.2.
CIRCUIT = {
    "input->a0.1<q>": 2.0,
    "input->a0.1<k>": 2.2,
    "input->a0.1<v>": 2.4,
    "input->a1.2<q>": 3.0,
    "a0.1->a1.2<k>": 4.0,
    "input->a1.2<v>": 2.6,
    "a1.2->logits": -5.0,
}


def induction_graph() -> CircuitGraph:
    """Circuit edges scored as in CIRCUIT; every other edge gets a distinct score in ±(0.01 … 1.09)."""
    graph = model_graph(2, 4)
    scores = torch.tensor([(-1) ** i * (0.01 + 0.01 * i) for i in range(graph.n_edges)])
    index = graph.edge_index()
    in_circuit = torch.zeros(graph.n_edges, dtype=torch.bool)
    for name, score in CIRCUIT.items():
        scores[index[name]] = score
        in_circuit[index[name]] = True
    info = {"model": "induction-2l", "task": "induction", "method": "hand-set"}
    return graph.with_scores(scores, **info).with_circuit(in_circuit)


def edges_of(svg: ET.Element) -> list[ET.Element]:
    return [p for p in svg.iter(f"{SVG}path") if "edge" in p.get("class", "").split()]


def node_boxes(svg: ET.Element) -> dict[str, tuple[float, float]]:
    """node name -> (x, y) of its box, read back from the SVG."""
    boxes = {}
    for group in svg.iter(f"{SVG}g"):
        rect = group.find(f"{SVG}rect")
        assert rect is not None
        boxes[group.get("data-node", "")] = (float(rect.get("x", "nan")), float(rect.get("y", "nan")))
    return boxes


def end_point(path: ET.Element) -> tuple[float, float]:
    x, y = re.findall(r"(-?[\d.]+),(-?[\d.]+)", path.get("d", ""))[-1]
    return float(x), float(y)


def test_every_circuit_edge_is_drawn_and_marked_in_valid_svg() -> None:
    graph = induction_graph()
    svg = ET.fromstring(render_svg(graph, max_edges=30))
    assert svg.tag == f"{SVG}svg"
    paths = edges_of(svg)
    assert len(paths) == 30  # 7 circuit edges + the 23 strongest others
    marked = {p.get("data-edge") for p in paths if "circuit" in p.get("class", "").split()}
    assert marked == set(CIRCUIT)
    others = [p for p in paths if "context" in p.get("class", "").split()]
    expected = sorted((e for e in graph.edges if e.name not in CIRCUIT), key=lambda e: -abs(
        float(graph.scores[graph.edge_index()[e.name]])))[:23]  # fmt: skip
    assert {p.get("data-edge") for p in others} == {e.name for e in expected}
    assert {float(p.get("stroke-opacity", 0)) for p in others} == {0.22}
    for path in paths:  # colour by sign, and each carries a tooltip naming it
        score = float(path.get("data-score", "nan"))
        assert path.get("stroke") == (POSITIVE if score >= 0 else NEGATIVE)
        title = path.find(f"{SVG}title")
        assert (
            title is not None and title.text is not None and title.text.startswith(path.get("data-edge", "?"))
        )
    circuit_nodes = {g.get("data-node") for g in svg.iter(f"{SVG}g") if "in-circuit" in g.get("class", "")}
    assert circuit_nodes == {"input", "a0.1", "a1.2", "logits"}
    assert "7 of the circuit's 7" in render_svg(graph, max_edges=30)
    title = next(svg.iter(f"{SVG}text")).text
    assert title == "Circuit graph · model induction-2l · task induction · method hand-set"
    graph.info["model"] = (
        "/home/me/toys/induction-2l"  # a local folder: its name in the title, all in the table
    )
    page = graph_page(graph)
    assert "model induction-2l · task" in page and "<td>/home/me/toys/induction-2l</td>" in page


def test_edge_width_grows_linearly_with_abs_score() -> None:
    graph = induction_graph()
    paths = edges_of(ET.fromstring(render_svg(graph)))
    assert len(paths) == graph.n_edges == 110  # under the cap: everything is drawn
    pairs = sorted(
        (abs(float(p.get("data-score", "nan"))), float(p.get("stroke-width", "nan"))) for p in paths
    )
    widths = [w for _, w in pairs]
    assert widths == sorted(widths) and widths[0] < widths[-1]
    largest = 5.0  # |a1.2 -> logits|
    for magnitude, width in pairs:  # MIN_WIDTH at 0, MAX_WIDTH at the largest |score|, linear between
        assert width == pytest.approx(MIN_WIDTH + (MAX_WIDTH - MIN_WIDTH) * magnitude / largest, abs=0.006)
    by_name = {p.get("data-edge"): float(p.get("stroke-width", "nan")) for p in paths}
    assert by_name["a1.2->logits"] == MAX_WIDTH and by_name["a0.1->a1.2<k>"] == pytest.approx(0.6 + 6.4 * 0.8)


def test_rows_follow_layers_and_edges_end_at_their_port() -> None:
    graph = induction_graph()
    svg = ET.fromstring(render_svg(graph))
    boxes = node_boxes(svg)
    assert set(boxes) == {n.name for n in graph.nodes}  # small graph: every node shown
    layer = {n.name: n.layer for n in graph.nodes}
    for a in graph.nodes:
        for b in graph.nodes:
            if layer[a.name] < layer[b.name]:
                assert boxes[a.name][1] < boxes[b.name][1], (
                    a.name,
                    b.name,
                )  # input on top, logits at the bottom
    for lay in (0, 1):
        heads = [boxes[f"a{lay}.{h}"] for h in range(4)]
        assert len({y for _, y in heads}) == 1 and [x for x, _ in heads] == sorted(x for x, _ in heads)
        assert boxes[f"m{lay}"][1] > heads[0][1]  # the MLP reads the heads: half a row lower
    offsets = {"q": 0.2, "k": 0.5, "v": 0.8, "": 0.5}
    for path in edges_of(svg):
        x, y = end_point(path)
        box_x, box_y = boxes[path.get("data-to", "")]
        assert y == pytest.approx(box_y) and x == pytest.approx(
            box_x + BOX_W * offsets[path.get("data-port", "")]
        )
        start_x, start_y = (float(v) for v in re.findall(r"M(-?[\d.]+),(-?[\d.]+)", path.get("d", ""))[0])
        up_x, up_y = boxes[path.get("data-from", "")]
        assert (start_x, start_y) == pytest.approx((up_x + BOX_W / 2, up_y + BOX_H))  # bottom centre
        assert start_y < y  # every edge points down the page


def hostile_graph() -> CircuitGraph:
    """A graph whose node name and info values are markup."""
    evil = "<script>alert('node')</script>"
    nodes = [
        Node("input", "input", -1),
        Node(evil, "head", 0, 0),
        Node("m0", "mlp", 0),
        Node("logits", "logits", 1),
    ]
    edges = [Edge("input", evil, "q"), Edge(evil, "m0"), Edge("m0", "logits"), Edge(evil, "logits")]
    info = {
        "model": "<script>alert('model')</script>",
        "task": '"><img src=x onerror=alert(1)>',
        "x&y": ["<b>"],
    }
    graph = CircuitGraph(
        nodes, edges, torch.tensor([1.0, -2.0, 3.0, 0.5]), torch.zeros(4, dtype=torch.bool), info
    )
    return graph.with_circuit(torch.tensor([True, True, False, False]))


def test_names_and_info_from_the_graph_are_escaped() -> None:
    graph = hostile_graph()
    svg_text = render_svg(graph)
    page = graph_page(graph)
    for text in (svg_text, page):
        assert "<script>alert" not in text and "<img" not in text and "<b>" not in text
        assert "&lt;script&gt;alert(" in text
    assert page.count("<script>") == 1  # the page's own script, which holds no data
    svg = ET.fromstring(svg_text)  # still valid XML, and the names read back exactly
    assert "<script>alert('node')</script>" in node_boxes(svg)
    assert any(t.text == "<script>alert('node')</script>" for t in svg.iter(f"{SVG}text"))
    assert {p.get("data-edge") for p in edges_of(svg)} == {e.name for e in graph.edges}


def test_feature_nodes_and_infinite_scores() -> None:
    """Feature nodes (transcoder latents, for attribution graphs) go in their layer's lower row, after
    the MLP; an infinite score draws at the widest and does not flatten every other width."""
    nodes = [Node("input", "input", -1), Node("a0.0", "head", 0, 0), Node("m0", "mlp", 0)]
    nodes += [Node("f0.7", "feature", 0, 7), Node("f1.2", "feature", 1, 2), Node("logits", "logits", 2)]
    edges = [Edge("input", "a0.0", "q"), Edge("a0.0", "f0.7"), Edge("f0.7", "f1.2"), Edge("f1.2", "logits")]
    graph = CircuitGraph(
        nodes, edges, torch.tensor([1.0, 2.0, math.inf, -4.0]), torch.zeros(4, dtype=torch.bool)
    )
    svg = ET.fromstring(render_svg(graph))
    boxes = node_boxes(svg)
    assert boxes["f0.7"][1] == boxes["m0"][1] > boxes["a0.0"][1] and boxes["f0.7"][0] > boxes["m0"][0]
    assert boxes["a0.0"][1] < boxes["f0.7"][1] < boxes["f1.2"][1] < boxes["logits"][1]
    widths = {p.get("data-edge"): float(p.get("stroke-width", "nan")) for p in edges_of(svg)}
    assert widths["input->a0.0<q>"] == pytest.approx(0.6 + 6.4 / 4)  # the largest finite |score| is 4
    assert widths["a0.0->f0.7"] == pytest.approx(0.6 + 6.4 / 2)
    assert widths["f0.7->f1.2"] == widths["f1.2->logits"] == MAX_WIDTH


def smollm_shaped_graph() -> CircuitGraph:
    """SmolLM2-135M's graph (30 layers, 9 query heads, 3 key/value heads: 70,651 edges), random scores, a
    60-edge circuit of mid-sized edges (so the cap must keep weaker circuit edges over stronger others)."""
    graph = model_graph(30, 9, 3)
    scores = torch.randn(graph.n_edges, generator=torch.Generator().manual_seed(0))
    circuit = torch.zeros(graph.n_edges, dtype=torch.bool)
    circuit[scores.abs().argsort(descending=True)[1000:1060]] = True
    return graph.with_scores(scores, model="smollm2-135m", task="ioi", method="random").with_circuit(circuit)


def test_size_cap_on_a_smollm2_sized_graph(tmp_path: Path) -> None:
    graph = smollm_shaped_graph()
    assert graph.n_edges == 70651
    text = render_svg(graph)
    svg = ET.fromstring(text)
    paths = edges_of(svg)
    assert len(paths) == 300 and len(text) < 300_000
    circuit_names = {e.name for e in graph.circuit_edges()}
    assert circuit_names <= {p.get("data-edge") for p in paths}
    others = graph.scores.abs().masked_fill(graph.in_circuit, -1).topk(240).indices.tolist()
    assert {p.get("data-edge") for p in paths} - circuit_names == {graph.edges[i].name for i in others}
    boxes = node_boxes(svg)
    touched = {n for p in paths for n in (p.get("data-from"), p.get("data-to"))}
    assert set(boxes) == touched | {"input", "logits"}  # large graph: only the drawn edges' ends
    labels = [t.text for t in svg.iter(f"{SVG}text") if (t.text or "").startswith("layer ")]
    assert labels == [f"layer {i}" for i in range(30)]  # every layer keeps its row
    for group in svg.iter(f"{SVG}g"):  # GQA: k and v ticks only on the first head of each kv group
        name = group.get("data-node", "")
        if name.startswith("a"):
            ticks = len(group.findall(f"{SVG}line"))
            assert ticks == (3 if int(name.split(".")[1]) % 3 == 0 else 1), name
    only = edges_of(ET.fromstring(render_svg(graph, circuit_only=True)))
    assert {p.get("data-edge") for p in only} == circuit_names
    few = edges_of(ET.fromstring(render_svg(graph, max_edges=20)))
    strongest = graph.scores.abs().masked_fill(~graph.in_circuit, -1).topk(20).indices.tolist()
    assert {p.get("data-edge") for p in few} == {graph.edges[i].name for i in strongest}
    assert ET.parse(save_graph_page(graph, tmp_path / "g.svg", max_edges=50)).getroot().tag == f"{SVG}svg"


def test_bad_settings_and_unscored_graphs() -> None:
    graph = model_graph(2, 4)  # no scores, no circuit
    with pytest.raises(InputError, match="no circuit"):
        render_svg(graph, circuit_only=True)
    with pytest.raises(ConfigError, match="at least 1"):
        render_svg(induction_graph(), max_edges=0)
    assert drawn_edges(graph) == []  # unscored edges are not "strongest"
    svg = ET.fromstring(render_svg(graph))
    assert edges_of(svg) == [] and len(node_boxes(svg)) == len(graph.nodes)
    scored_circuit = induction_graph()
    unscored_circuit = scored_circuit.with_scores(torch.full((110,), math.nan)).with_circuit(
        scored_circuit.in_circuit
    )
    widths = {p.get("stroke-width") for p in edges_of(ET.fromstring(render_svg(unscored_circuit)))}
    assert widths == {"1.5"}  # circuit edges without scores still drawn, at one width


def test_page_opens_in_chromium_and_hover_shows_scores(browser: Any, tmp_path: Path) -> None:
    from PIL import Image

    path = save_graph_page(induction_graph(), tmp_path / "circuit.html")
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri())
    image = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(-1, 3)  # [n_pixels, rgb]
    assert (pixels < 250).any(dim=1).float().mean() > 0.03  # not blank
    assert len(torch.unique(pixels, dim=0)) > 50  # lines, boxes and text, not one flat colour
    page.hover('path.edge[data-edge="a1.2->logits"]')
    assert page.locator("#hover").inner_text().startswith("a1.2->logits · score -5 · in the circuit")
    page.hover('g.node[data-node="a0.1"]')
    lit = page.locator("path.edge.lit").evaluate_all("paths => paths.map(p => p.dataset.edge)")
    assert len(lit) == sum(1 for e in induction_graph().edges if "a0.1" in (e.upstream, e.downstream))
    assert "a0.1 (head, layer 0)" in page.locator("#hover").inner_text()
    context.close()
    assert not errors
