"""Choosing a circuit from scored edges, and measuring how faithful it is with real patching.

A circuit is faithful when running the model with every edge *outside* it patched to the
corrupted input keeps the behaviour. Faithfulness is normalised: 0 = the corrupted run's metric,
1 = the clean run's. The MIB benchmark's summaries of the curve "faithfulness against circuit
size" (sizes as fractions of all edges: `MIB_FRACTIONS`) compare methods with one number each:
CPR, the area under the curve (higher is better), and CMD, the area between the curve and 1
(lower is better); both by the trapezoid rule over the fraction of edges kept.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from rama.circuits.edge_patching import EdgeModel
from rama.circuits.graph import CircuitGraph
from rama.circuits.tasks import CircuitTask
from rama.errors import ConfigError, InputError
from rama.hooks.model import HookedModel
from rama.metrics import auroc

MIB_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _ranking(graph: CircuitGraph, absolute: bool) -> torch.Tensor:
    scores = graph.scores.abs() if absolute else graph.scores
    if bool(scores.isnan().all()):
        raise InputError("the graph has no edge scores yet: run a discovery method first")
    return torch.nan_to_num(scores, nan=float("-inf"))


def prune(graph: CircuitGraph, keep: torch.Tensor) -> torch.Tensor:
    """`keep [n_edges]` minus edges that cannot matter: their sender is not reached from the input
    through kept edges, or their receiver does not reach the logits."""
    keep = keep.clone()
    while True:
        reached = {"input"} | {e.downstream for e, k in zip(graph.edges, keep.tolist(), strict=True) if k}
        reaches = {"logits"} | {e.upstream for e, k in zip(graph.edges, keep.tolist(), strict=True) if k}
        alive = torch.tensor(
            [
                k and e.upstream in reached and e.downstream in reaches
                for e, k in zip(graph.edges, keep.tolist(), strict=True)
            ],
            dtype=torch.bool,
        )
        if bool((alive == keep).all()):
            return keep
        keep = alive


def top_edges(graph: CircuitGraph, n: int, absolute: bool = True, pruned: bool = True) -> CircuitGraph:
    """The circuit of the `n` highest-scoring edges (by |score| when `absolute`), pruned."""
    if not 0 <= n <= graph.n_edges:
        raise ConfigError(f"n must lie in 0..{graph.n_edges} (the graph's edge count); got {n}")
    keep = torch.zeros(graph.n_edges, dtype=torch.bool)
    keep[_ranking(graph, absolute).argsort(descending=True, stable=True)[:n]] = True
    return graph.with_circuit(prune(graph, keep) if pruned else keep)


def threshold_edges(graph: CircuitGraph, threshold: float, absolute: bool = True) -> CircuitGraph:
    """The circuit of edges scoring above `threshold`; refuses thresholds that keep all or nothing."""
    keep = _ranking(graph, absolute) > threshold
    if bool(keep.all()):
        raise ConfigError(
            f"threshold {threshold} keeps all {graph.n_edges} edges, so the circuit is the whole model; raise it "
            f"(scores range {float(graph.scores.nan_to_num().abs().min()):.3g} … "
            f"{float(graph.scores.nan_to_num().abs().max()):.3g})"
        )
    if not bool(keep.any()):
        raise ConfigError(f"threshold {threshold} keeps no edge: the circuit would be empty; lower it")
    return graph.with_circuit(prune(graph, keep))


@dataclass(frozen=True)
class Faithfulness:
    clean: float  # the metric on the clean run (mean over prompts)
    corrupted: float  # on the corrupted run
    circuit: float  # with every edge outside the circuit patched
    edges: int

    @property
    def normalised(self) -> float:
        return (self.circuit - self.corrupted) / (self.clean - self.corrupted)


def _metric_with(
    edge_model: EdgeModel, task: CircuitTask, removed: torch.Tensor, refs: list[torch.Tensor]
) -> float:
    total = 0.0
    for batch, corrupted_outputs in zip(task.batches, refs, strict=True):
        total += float(batch.metric(edge_model.patched_logits(batch.clean, removed, corrupted_outputs)).sum())
    return total / task.n_prompts


def _baselines(model: HookedModel, task: CircuitTask) -> tuple[float, float]:
    with torch.no_grad():
        clean = sum(float(b.metric(model(b.clean)).sum()) for b in task.batches) / task.n_prompts
        corrupted = sum(float(b.metric(model(b.corrupted)).sum()) for b in task.batches) / task.n_prompts
    if abs(clean - corrupted) < 1e-9:
        raise InputError(
            f"task {task.name!r}: the clean and corrupted prompts score the same ({clean:.4g}), so "
            "faithfulness is undefined; choose corrupted prompts that change the behaviour"
        )
    return clean, corrupted


def circuit_faithfulness(model: HookedModel, task: CircuitTask, graph: CircuitGraph) -> Faithfulness:
    """The metric with only `graph.in_circuit` edges reading clean values."""
    if not bool(graph.in_circuit.any()):
        raise ConfigError("the circuit is empty: choose edges first (top_edges, threshold_edges or ACDC)")
    edge_model = EdgeModel(model, graph)
    refs = [edge_model.sender_outputs(b.corrupted) for b in task.batches]
    clean, corrupted = _baselines(model, task)
    value = _metric_with(edge_model, task, ~graph.in_circuit, refs)
    return Faithfulness(clean, corrupted, value, int(graph.in_circuit.sum()))


@dataclass(frozen=True)
class FaithfulnessCurve:
    fractions: list[float]
    edges: list[int]  # edges kept after pruning, per fraction
    values: list[float]  # the metric per fraction
    normalised: list[float]
    clean: float
    corrupted: float

    @property
    def cpr(self) -> float:
        """Area under the normalised curve over the fraction of edges (MIB's CPR; higher is better)."""
        return _trapezoid(self.fractions, self.normalised)

    @property
    def cmd(self) -> float:
        """Area between the curve and 1 (MIB's CMD; lower is better)."""
        return _trapezoid(self.fractions, [abs(1.0 - v) for v in self.normalised])

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "cpr": self.cpr, "cmd": self.cmd}


def _trapezoid(x: list[float], y: list[float]) -> float:
    return sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1))


def faithfulness_curve(
    model: HookedModel,
    task: CircuitTask,
    graph: CircuitGraph,
    fractions: tuple[float, ...] = MIB_FRACTIONS,
    absolute: bool = True,
    progress: bool = True,
) -> FaithfulnessCurve:
    """Faithfulness of the top-n circuit (pruned) at each fraction of the graph's edges."""
    if not fractions or any(not 0 < f <= 1 for f in fractions) or list(fractions) != sorted(fractions):
        raise ConfigError(f"fractions must rise within (0, 1]; got {fractions}")
    edge_model = EdgeModel(model, graph)
    refs = [edge_model.sender_outputs(b.corrupted) for b in task.batches]
    clean, corrupted = _baselines(model, task)
    edges, values, empty = [], [], []
    for fraction in tqdm(fractions, desc="faithfulness", disable=not progress, unit="size"):
        chosen = top_edges(graph, int(fraction * graph.n_edges), absolute).in_circuit
        if not bool(chosen.any()):
            empty.append(f"{fraction:g}")
        edges.append(int(chosen.sum()))
        values.append(_metric_with(edge_model, task, ~chosen, refs))
    if empty:
        warnings.warn(
            f"the top edges at fraction(s) {', '.join(empty)} connect no path from the input to the logits, "
            "so those circuits are empty after pruning (they score as the corrupted run)",
            stacklevel=2,
        )
    normalised = [(v - corrupted) / (clean - corrupted) for v in values]
    return FaithfulnessCurve(list(fractions), edges, values, normalised, clean, corrupted)


def edge_auroc(graph: CircuitGraph, true_edges: list[str], absolute: bool = True) -> float:
    """ROC AUC of the graph's edge scores at telling `true_edges` (names as `Edge.name`) from the rest."""
    index = graph.edge_index()
    unknown = [name for name in true_edges if name not in index]
    if unknown or not true_edges:
        raise InputError(
            f"true edges must name edges of the graph (like 'a0.1->a1.0<k>'); unknown: {unknown[:5]}"
        )
    is_true = torch.zeros(graph.n_edges, dtype=torch.bool)
    is_true[[index[name] for name in true_edges]] = True
    scores = _ranking(graph, absolute)
    return auroc(scores[is_true], scores[~is_true])
