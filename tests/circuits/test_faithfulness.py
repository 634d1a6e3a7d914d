"""Circuit selection, pruning, faithfulness and MIB's CPR/CMD, each against a hand computation."""

from __future__ import annotations

import pytest
import torch

from rama import load
from rama.circuits.discovery import eap
from rama.circuits.faithfulness import (
    FaithfulnessCurve,
    circuit_faithfulness,
    edge_auroc,
    faithfulness_curve,
    prune,
    threshold_edges,
    top_edges,
)
from rama.circuits.graph import model_graph
from rama.circuits.tasks import induction_task
from rama.errors import ConfigError, InputError
from rama.toys.zoo import pretrained


def test_cpr_and_cmd_by_the_trapezoid_rule() -> None:
    curve = FaithfulnessCurve([0.1, 0.5, 1.0], [1, 5, 10], [0.0, 0.0, 0.0], [0.2, 0.8, 1.0], 1.0, 0.0)
    assert curve.cpr == pytest.approx(0.4 * 0.5 + 0.5 * 0.9)  # (0.2+0.8)/2·0.4 + (0.8+1)/2·0.5
    assert curve.cmd == pytest.approx(0.4 * 0.5 + 0.5 * 0.1)  # (0.8+0.2)/2·0.4 + (0.2+0)/2·0.5
    assert curve.to_json()["cpr"] == pytest.approx(curve.cpr)


def test_prune_drops_edges_that_reach_nothing() -> None:
    graph = model_graph(2, 2)
    index = graph.edge_index()
    keep = torch.zeros(graph.n_edges, dtype=torch.bool)
    for name in ("input->a0.0<q>", "a0.0->logits", "a0.1->a1.0<q>", "input->a1.1<v>"):
        keep[index[name]] = True
    kept = {graph.edges[i].name for i in prune(graph, keep).nonzero().flatten().tolist()}
    # a0.1 has no kept input (unreached); a1.1 sends nowhere (reaches no logits)
    assert kept == {"input->a0.0<q>", "a0.0->logits"}


def test_top_edges_threshold_and_auroc_by_hand() -> None:
    graph = model_graph(1, 1)  # input -> a0.0 <q,k,v>, input -> m0, a0.0 -> m0, input/a0.0/m0 -> logits
    names = [e.name for e in graph.edges]
    scores = torch.tensor([float(-i) for i in range(graph.n_edges)])  # |score| rises along the list
    scored = graph.with_scores(scores)
    chosen = top_edges(scored, 2, pruned=False).circuit_edges()
    assert [e.name for e in chosen] == names[-2:]
    assert edge_auroc(scored, names[-3:]) == 1.0 and edge_auroc(scored, names[:3]) == 0.0
    with pytest.raises(ConfigError, match="keeps all"):
        threshold_edges(scored, -1.0)
    with pytest.raises(ConfigError, match="keeps no edge"):
        threshold_edges(scored, 1e6)
    with pytest.raises(InputError, match="no edge scores"):
        top_edges(graph, 1)
    with pytest.raises(InputError, match="unknown"):
        edge_auroc(scored, ["input->nowhere"])


def test_the_whole_graph_is_fully_faithful_and_an_empty_circuit_is_refused() -> None:
    model = load(pretrained("induction-2l"))
    task = induction_task(model, n=8, half=8)
    graph = eap(model, task, progress=False)
    curve = faithfulness_curve(model, task, graph, fractions=(0.05, 0.2, 1.0), progress=False)
    assert curve.normalised[-1] == pytest.approx(1.0, abs=1e-4) and curve.edges[-1] == graph.n_edges
    assert curve.clean > curve.corrupted
    whole = circuit_faithfulness(model, task, graph.with_circuit(torch.ones(graph.n_edges, dtype=torch.bool)))
    assert whole.normalised == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ConfigError, match="empty"):
        circuit_faithfulness(model, task, graph)
    with pytest.raises(ConfigError, match="fractions"):
        faithfulness_curve(model, task, graph, fractions=(0.5, 0.2))
