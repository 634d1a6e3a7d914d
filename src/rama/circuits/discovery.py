"""Automated circuit discovery on one graph object: EAP, EAP-IG and ACDC.

- EAP (Syed et al. 2023): score(u -> v) = (corrupted_u − clean_u) · ∂metric/∂input_v, one forward and
  one backward pass per batch for every edge at once: a first-order estimate of what patching the
  edge alone does to the metric.
- EAP-IG (Hanna et al. 2024, "inputs" variant): the same product with the gradient averaged over
  `steps` runs whose input embeddings move in a straight line from the corrupted prompt to the
  clean one (α = 1/steps … 1), integrated gradients on the inputs.
- ACDC (Conmy et al. 2023): visit receiving ports from the logits backwards; try removing each
  incoming edge (real patching: the port reads the sender's corrupted output); keep it removed if
  the damage grows by less than τ. Damage is the KL divergence from the clean run at the metric's
  position (`damage="kl"`, ACDC's default) or the drop of the task metric (`damage="metric"`).

Scores are in the metric's units per prompt; negative EAP scores mean removing the edge lowers the
metric. Selections (top-n, thresholds, pruning) live in `rama.circuits.faithfulness`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from rama.circuits.edge_patching import EdgeModel, circuit_graph
from rama.circuits.graph import CircuitGraph
from rama.circuits.tasks import CircuitTask, TaskBatch
from rama.errors import ConfigError, InputError
from rama.hooks.model import HookedModel
from rama.interventions.logit_metrics import kl_divergence

METHODS = ("eap", "eap-ig", "acdc")


def _graph_for(model: HookedModel, graph: CircuitGraph | None) -> CircuitGraph:
    return graph if graph is not None else circuit_graph(model)


def eap(
    model: HookedModel,
    task: CircuitTask,
    graph: CircuitGraph | None = None,
    ig_steps: int = 0,
    progress: bool = True,
) -> CircuitGraph:
    """Edge attribution patching (`ig_steps=0`) or EAP-IG on the inputs (`ig_steps ≥ 1`)."""
    if ig_steps < 0:
        raise ConfigError(f"ig_steps must be ≥ 0 (0 = plain EAP); got {ig_steps}")
    edge_model = EdgeModel(model, _graph_for(model, graph))
    layout = edge_model.layout
    total = torch.zeros(edge_model.graph.n_edges, dtype=torch.float64)
    started, any_gradient = time.perf_counter(), False
    name = "eap-ig" if ig_steps else "eap"
    for batch in tqdm(task.batches, desc=name, disable=not progress, unit="batch"):
        clean = edge_model.sender_outputs(batch.clean)
        corrupted = edge_model.sender_outputs(batch.corrupted)
        grads = _batch_gradients(edge_model, batch, clean, corrupted, ig_steps)
        any_gradient = any_gradient or bool(grads.abs().sum() > 0)
        by_pair = (corrupted - clean).flatten(1).double() @ grads.flatten(1).double().T  # [senders, ports]
        total += by_pair[layout.edge_sender, layout.edge_port]
        del clean, corrupted, grads
    if not any_gradient:
        warnings.warn(
            f"the metric of task {task.name!r} has zero gradient with respect to every edge: it does not "
            "depend on the model's output, so every score is 0; use a metric computed from the logits",
            stacklevel=2,
        )
    settings = {"method": name, "task": task.name, "prompts": task.n_prompts, "ig_steps": ig_steps}
    settings["seconds"] = round(time.perf_counter() - started, 3)
    return edge_model.graph.with_scores((total / task.n_prompts).float(), **settings)


def _batch_gradients(
    edge_model: EdgeModel, batch: TaskBatch, clean: torch.Tensor, corrupted: torch.Tensor, steps: int
) -> torch.Tensor:
    """`[n_ports, batch, pos, d_model]`: the metric's gradient at each port, plain or integrated."""
    if steps == 0:
        return edge_model.port_gradients(batch.clean, batch.metric)[0]
    start, end = corrupted[0], clean[0]  # the input node is sender 0: the embeddings
    grads = torch.zeros(len(edge_model.layout.ports), *batch.clean.shape, clean.shape[-1])
    for step in range(1, steps + 1):
        point = start + (end - start) * (step / steps)
        grads += edge_model.port_gradients(batch.clean, batch.metric, input_override=point)[0]
    return grads / steps


def eap_ig(
    model: HookedModel,
    task: CircuitTask,
    steps: int = 5,
    graph: CircuitGraph | None = None,
    progress: bool = True,
) -> CircuitGraph:
    if steps < 1:
        raise ConfigError(f"EAP-IG needs at least one integration step; got steps={steps}")
    return eap(model, task, graph, ig_steps=steps, progress=progress)


@dataclass
class _BatchRefs:
    """What every ACDC trial needs of one batch, computed once."""

    batch: TaskBatch
    corrupted_outputs: torch.Tensor  # [n_senders, batch, pos, d_model]
    clean_logits: torch.Tensor  # [batch, k, d_vocab] at the metric positions


def _damage(edge_model: EdgeModel, refs: list[_BatchRefs], removed: torch.Tensor, damage: str) -> float:
    """Mean over prompts of the KL from the clean run, or of the metric's drop."""
    total, count = 0.0, 0
    for ref in refs:
        logits = edge_model.patched_logits(ref.batch.clean, removed, ref.corrupted_outputs)
        if damage == "kl":
            value = kl_divergence(ref.clean_logits, logits_at_positions(logits, ref.batch.positions)).mean(-1)
        else:
            value = -ref.batch.metric(logits)
        total += float(value.sum())
        count += logits.shape[0]
    return total / count


def acdc(
    model: HookedModel,
    task: CircuitTask,
    threshold: float,
    graph: CircuitGraph | None = None,
    damage: str = "kl",
    progress: bool = True,
    max_seconds: float | None = None,
) -> CircuitGraph:
    """ACDC with real patching. Each edge's score is how much removing it raised the damage when it
    was tried (so the graph also ranks edges); `in_circuit` holds the edges ACDC kept. With
    `max_seconds` the sweep stops early and `info["complete"]` is False (untested edges stay in)."""
    if threshold <= 0:
        raise ConfigError(f"ACDC's threshold τ must be > 0 (τ = 0 keeps every edge); got {threshold}")
    if damage not in ("kl", "metric"):
        raise ConfigError(f"damage must be 'kl' or 'metric'; got {damage!r}")
    edge_model = EdgeModel(model, _graph_for(model, graph))
    refs = _acdc_refs(edge_model, task)
    removed = torch.zeros(edge_model.graph.n_edges, dtype=torch.bool)
    scores = torch.full((edge_model.graph.n_edges,), float("nan"))
    current, started = _damage(edge_model, refs, removed, damage), time.perf_counter()
    order = _reverse_topological_edges(edge_model)
    complete = True
    for edge in tqdm(order, desc="acdc", disable=not progress, unit="edge"):
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            complete = False
            break
        removed[edge] = True
        trial = _damage(edge_model, refs, removed, damage)
        scores[edge] = trial - current
        if trial - current < threshold:
            current = trial
        else:
            removed[edge] = False
    settings = {"method": "acdc", "task": task.name, "prompts": task.n_prompts, "threshold": threshold}
    settings.update(damage=damage, complete=complete, seconds=round(time.perf_counter() - started, 3))
    settings["edges_tested"] = int((~scores.isnan()).sum())
    return edge_model.graph.with_scores(scores, **settings).with_circuit(~removed)


def _acdc_refs(edge_model: EdgeModel, task: CircuitTask) -> list[_BatchRefs]:
    refs = []
    with torch.no_grad():
        for batch in task.batches:
            at = logits_at_positions(edge_model.model(batch.clean), batch.positions)
            refs.append(_BatchRefs(batch, edge_model.sender_outputs(batch.corrupted), at))
    return refs


def logits_at_positions(logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """`[batch, k, d_vocab]`: each row's logits at its `positions` (`[batch]` or `[batch, k]`)."""
    index = positions if positions.ndim == 2 else positions[:, None]
    return logits.gather(1, index[..., None].expand(-1, -1, logits.shape[-1]))


def _reverse_topological_edges(edge_model: EdgeModel) -> list[int]:
    """Edge indices grouped by receiving port, ports from the logits backwards, and within a port
    senders from the latest to the earliest (ACDC's order)."""
    layout = edge_model.layout
    keys = [(-int(layout.edge_port[i]), -int(layout.edge_sender[i])) for i in range(edge_model.graph.n_edges)]
    return sorted(range(edge_model.graph.n_edges), key=keys.__getitem__)


def discover(
    model: HookedModel,
    task: CircuitTask,
    method: str,
    *,
    graph: CircuitGraph | None = None,
    ig_steps: int = 5,
    threshold: float = 0.01,
    progress: bool = True,
) -> CircuitGraph:
    """Run one of `METHODS` by name."""
    runners: dict[str, Callable[[], CircuitGraph]] = {
        "eap": lambda: eap(model, task, graph, progress=progress),
        "eap-ig": lambda: eap_ig(model, task, ig_steps, graph, progress),
        "acdc": lambda: acdc(model, task, threshold, graph, progress=progress),
    }
    if method not in runners:
        raise InputError(f"unknown discovery method {method!r}; choose from {', '.join(METHODS)}")
    return runners[method]()
