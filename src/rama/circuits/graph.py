"""One graph object for every circuit-discovery method: nodes, edges with scores, a chosen circuit.

Nodes are the model's computational units: `input` (the embeddings), each attention head
(`a{layer}.{head}`), each MLP (`m{layer}`) and `logits`. A future attribution graph adds feature
nodes (`kind="feature"`, e.g. a transcoder latent `f{layer}.{index}`) without changing the schema.
An edge runs from an upstream node's output to one input *port* of a downstream node: a head
reads the residual stream three times (`q`, `k`, `v`), everything else once (port `""`). In a
grouped-query model several query heads share one key/value head, so there is one `k` and one `v`
port per key/value head, listed on the first query head of its group: with 3 query heads per
kv head (SmolLM2), `a3.1 -> a7.3<k>` is the edge into the keys of kv head 1, which heads 7.3,
7.4 and 7.5 all read; heads 7.4 and 7.5 have only a `q` port. Nothing is ungrouped.

The graph is plain data: methods fill `scores`, selection functions return a new graph with
`in_circuit` set, and `save`/`load` write and read one JSON file (atomically).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from rama.atomic import staged_file
from rama.errors import InputError

GRAPH_FORMAT = "rama.circuit-graph/1"
NODE_KINDS = ("input", "head", "mlp", "logits", "feature")
PORTS = ("", "q", "k", "v")


@dataclass(frozen=True)
class Node:
    """A unit whose output is a sum term of the residual stream (or, for `logits`, its reader).

    `layer` orders the graph: -1 for `input`, n_layers for `logits`; `index` is the head (or the
    feature) within its layer, None for MLPs, input and logits."""

    name: str
    kind: str
    layer: int
    index: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in NODE_KINDS:
            raise InputError(f"node {self.name!r}: kind must be one of {NODE_KINDS}; got {self.kind!r}")


@dataclass(frozen=True)
class Edge:
    """`upstream`'s output as read by `downstream` through `port` ("q", "k", "v" or "")."""

    upstream: str
    downstream: str
    port: str = ""

    @property
    def name(self) -> str:
        port = f"<{self.port}>" if self.port else ""
        return f"{self.upstream}->{self.downstream}{port}"


def head_name(layer: int, head: int) -> str:
    return f"a{layer}.{head}"


def mlp_name(layer: int) -> str:
    return f"m{layer}"


@dataclass
class CircuitGraph:
    """Nodes in topological order, edges, per-edge `scores [n_edges]` (NaN until a method scores
    them) and `in_circuit [n_edges]` (bool). `info` records the model, task, method and settings."""

    nodes: list[Node]
    edges: list[Edge]
    scores: torch.Tensor
    in_circuit: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise InputError("node names must be unique")
        known = set(names)
        bad = [e.name for e in self.edges if e.upstream not in known or e.downstream not in known]
        if bad:
            raise InputError(f"edges name nodes the graph does not have: {bad[:5]}")
        if self.scores.shape != (len(self.edges),) or self.in_circuit.shape != (len(self.edges),):
            raise InputError(
                f"scores and in_circuit must each hold one value per edge ({len(self.edges)}); got "
                f"{tuple(self.scores.shape)} and {tuple(self.in_circuit.shape)}"
            )

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise InputError(f"no node named {name!r}; nodes look like 'input', 'a3.5', 'm3', 'logits'")

    def edge_index(self) -> dict[str, int]:
        """Edge name (`Edge.name`) -> position in `edges`."""
        return {e.name: i for i, e in enumerate(self.edges)}

    def with_scores(self, scores: torch.Tensor, **info: Any) -> CircuitGraph:
        """A copy carrying `scores [n_edges]` (and extra `info`, e.g. the method and its settings)."""
        return replace(
            self,
            scores=scores.detach().float().reshape(self.n_edges).clone(),
            in_circuit=torch.zeros(self.n_edges, dtype=torch.bool),
            info={**self.info, **info},
        )

    def with_circuit(self, in_circuit: torch.Tensor) -> CircuitGraph:
        return replace(self, in_circuit=in_circuit.bool().reshape(self.n_edges).clone())

    def circuit_edges(self) -> list[Edge]:
        return [e for e, keep in zip(self.edges, self.in_circuit.tolist(), strict=True) if keep]

    def circuit_nodes(self) -> list[str]:
        """Nodes touched by a circuit edge, in graph order."""
        touched = {n for e in self.circuit_edges() for n in (e.upstream, e.downstream)}
        return [n.name for n in self.nodes if n.name in touched]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": GRAPH_FORMAT,
            "info": self.info,
            "nodes": [
                {"name": n.name, "kind": n.kind, "layer": n.layer, "index": n.index} for n in self.nodes
            ],
            "edges": [
                {
                    "upstream": e.upstream,
                    "downstream": e.downstream,
                    "port": e.port,
                    "score": _json_float(float(s)),
                    "in_circuit": bool(c),
                }
                for e, s, c in zip(self.edges, self.scores.tolist(), self.in_circuit.tolist(), strict=True)
            ],
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the graph as one JSON file (to a temporary file, then renamed into place)."""
        with staged_file(path) as staging:
            staging.write_text(json.dumps(self.to_json()) + "\n")
        return Path(path)

    @staticmethod
    def load(path: str | os.PathLike[str]) -> CircuitGraph:
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"cannot read a circuit graph from {str(path)!r}: {error}") from error
        return graph_from_json(record, str(path))


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


def graph_from_json(record: dict[str, Any], where: str = "the record") -> CircuitGraph:
    if not isinstance(record, dict) or record.get("format") != GRAPH_FORMAT:
        raise InputError(f"{where} is not a rama circuit graph (expected format {GRAPH_FORMAT!r})")
    nodes = [Node(n["name"], n["kind"], int(n["layer"]), n.get("index")) for n in record["nodes"]]
    edges = [Edge(e["upstream"], e["downstream"], e.get("port", "")) for e in record["edges"]]
    scores = torch.tensor([math.nan if e["score"] is None else e["score"] for e in record["edges"]])
    in_circuit = torch.tensor([bool(e.get("in_circuit", False)) for e in record["edges"]], dtype=torch.bool)
    return CircuitGraph(nodes, edges, scores.float(), in_circuit, dict(record.get("info", {})))


def model_graph(
    n_layers: int,
    n_heads: int,
    n_kv_heads: int | None = None,
    split_qkv: bool = True,
    parallel_attn_mlp: bool = False,
) -> CircuitGraph:
    """Every edge of a transformer's residual-stream graph: each node sends to every node of a later
    layer (and a layer's heads to its own MLP unless attention and MLP run in parallel); each head
    receives on `q`, `k` and `v` when `split_qkv` (k/v once per key/value head), else once."""
    n_kv_heads = n_kv_heads or n_heads
    if n_layers < 1 or n_heads < 1 or n_heads % n_kv_heads:
        raise InputError(
            f"a model graph needs n_layers ≥ 1, n_heads ≥ 1 and n_heads divisible by n_kv_heads; got "
            f"{n_layers}, {n_heads}, {n_kv_heads}"
        )
    group = n_heads // n_kv_heads
    nodes = [Node("input", "input", -1)]
    for layer in range(n_layers):
        nodes += [Node(head_name(layer, h), "head", layer, h) for h in range(n_heads)]
        nodes.append(Node(mlp_name(layer), "mlp", layer))
    nodes.append(Node("logits", "logits", n_layers))
    ports = ("q", "k", "v") if split_qkv else ("",)
    edges: list[Edge] = []
    for down in nodes[1:]:
        senders = [u for u in nodes if _sends_to(u, down, parallel_attn_mlp)]
        down_ports: Sequence[str] = ports if down.kind == "head" else ("",)
        if down.kind == "head" and split_qkv and (down.index or 0) % group:
            down_ports = ("q",)  # k and v belong to the group's first head
        edges += [Edge(u.name, down.name, p) for p in down_ports for u in senders]
    empty = torch.full((len(edges),), math.nan)
    info = {"n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_kv_heads, "split_qkv": split_qkv}
    return CircuitGraph(nodes, edges, empty, torch.zeros(len(edges), dtype=torch.bool), info)


def _sends_to(up: Node, down: Node, parallel_attn_mlp: bool) -> bool:
    if up.kind in ("logits",) or up.layer > down.layer:
        return False
    if up.layer < down.layer:
        return True
    return down.kind == "mlp" and up.kind == "head" and not parallel_attn_mlp
