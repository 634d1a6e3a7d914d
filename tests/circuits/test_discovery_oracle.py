"""The exact oracle: a hand-set transformer in which only four known edges carry the behaviour
(`rama.toys.oracle`). Every discovery method must rank those edges above all others (ROC AUC 1.0),
and ACDC must keep exactly them. This is the regression test for EAP, EAP-IG and ACDC."""

from __future__ import annotations

import pytest
import torch

from rama.circuits.discovery import acdc, eap, eap_ig
from rama.circuits.edge_patching import circuit_graph
from rama.circuits.faithfulness import circuit_faithfulness, edge_auroc, top_edges
from rama.circuits.tasks import CircuitTask, TaskBatch, logit_difference_metric
from rama.hooks.model import HookedModel
from rama.toys.oracle import build_oracle


@pytest.fixture(scope="module")
def oracle() -> tuple[HookedModel, CircuitTask, list[str]]:
    hf, tokenizer, task, truth = build_oracle()
    model = HookedModel(hf, tokenizer, "oracle")
    last = torch.full((task.clean_tokens.shape[0],), task.clean_tokens.shape[1] - 1)
    metric = logit_difference_metric(task.answer_ids, task.wrong_ids, last)
    batch = TaskBatch(task.clean_tokens, task.corrupted_tokens, metric, last)
    return model, CircuitTask("oracle", [batch]), list(truth["true_edges"])


@pytest.mark.parametrize("method", ["eap", "eap-ig", "acdc"])
def test_every_method_ranks_the_true_edges_first(oracle, method: str) -> None:
    model, task, truth = oracle
    runs = {
        "eap": lambda: eap(model, task, progress=False),
        "eap-ig": lambda: eap_ig(model, task, steps=5, progress=False),
        "acdc": lambda: acdc(model, task, threshold=0.01, progress=False),
    }
    graph = runs[method]()
    assert graph.n_edges == len(circuit_graph(model).edges) and len(truth) == 4
    assert edge_auroc(graph, truth) == 1.0
    if method == "acdc":  # ACDC's own circuit is exactly the true edges
        assert sorted(e.name for e in graph.circuit_edges()) == sorted(truth)
    else:  # the top four edges are the circuit, and they carry all of the behaviour
        chosen = top_edges(graph, 4)
        assert sorted(e.name for e in chosen.circuit_edges()) == sorted(truth)
        assert circuit_faithfulness(model, task, chosen).normalised == pytest.approx(1.0, abs=1e-4)


def test_acdc_with_the_metric_as_damage_keeps_the_same_edges(oracle) -> None:
    model, task, truth = oracle
    graph = acdc(model, task, threshold=0.01, damage="metric", progress=False)
    assert sorted(e.name for e in graph.circuit_edges()) == sorted(truth)
