"""EAP, EAP-IG and ACDC on real (tiny and toy) models, each checked against a hand computation or
an identity, plus the task helpers' bad-input errors."""

from __future__ import annotations

import pytest
import torch

from rama import load
from rama.circuits.discovery import acdc, discover, eap, eap_ig
from rama.circuits.edge_patching import EdgeModel, circuit_graph
from rama.circuits.faithfulness import circuit_faithfulness, edge_auroc
from rama.circuits.tasks import (
    CircuitTask,
    TaskBatch,
    induction_task,
    logit_difference_metric,
    task_from_prompts,
)
from rama.errors import ConfigError, InputError
from rama.toys.zoo import pretrained
from tiny_models import hooked, random_tokens


@pytest.fixture(scope="module")
def llama_task() -> tuple[object, CircuitTask]:
    _, model = hooked("llama")
    clean, corrupted = random_tokens(4, 8, seed=1), random_tokens(4, 8, seed=2)
    metric = logit_difference_metric(torch.full((4,), 5), torch.full((4,), 6), torch.full((4,), 7))
    return model, CircuitTask("tiny", [TaskBatch(clean, corrupted, metric, torch.full((4,), 7))])


def test_eap_scores_are_gradient_times_difference_by_hand(llama_task) -> None:
    """The score of `input -> logits` is (corrupted − clean input) · ∂metric/∂(final norm's input)."""
    model, task = llama_task
    graph = eap(model, task, progress=False)
    batch = task.batches[0]
    with torch.no_grad():
        _, cache = model.run_with_cache(
            batch.clean, names=["blocks.1.hook_resid_post", "blocks.0.hook_resid_pre"]
        )
        _, other = model.run_with_cache(batch.corrupted, names=["blocks.0.hook_resid_pre"])
    resid = cache["blocks.1.hook_resid_post"].clone().requires_grad_(True)
    batch.metric(model.hf.lm_head(model.hf.model.norm(resid))).sum().backward()
    assert resid.grad is not None
    diff = other["blocks.0.hook_resid_pre"] - cache["blocks.0.hook_resid_pre"]
    expected = float((diff * resid.grad).sum()) / 4
    score = float(graph.scores[graph.edge_index()["input->logits"]])
    assert score == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert graph.info["method"] == "eap" and not graph.scores.isnan().any()


def test_eap_ig_with_one_step_is_eap(llama_task) -> None:
    """α = 1 is the clean input itself, so one integration step reproduces EAP exactly."""
    model, task = llama_task
    torch.testing.assert_close(
        eap_ig(model, task, steps=1, progress=False).scores, eap(model, task, progress=False).scores
    )
    with pytest.raises(ConfigError, match="at least one"):
        eap_ig(model, task, steps=0)


def test_a_metric_that_ignores_the_output_warns(llama_task) -> None:
    model, task = llama_task
    batch = task.batches[0]
    flat = CircuitTask(
        "flat", [TaskBatch(batch.clean, batch.corrupted, lambda logits: logits[:, 0, 0] * 0, batch.positions)]
    )
    with pytest.warns(UserWarning, match="zero gradient"):
        graph = eap(model, flat, progress=False)
    assert float(graph.scores.abs().max()) == 0.0


def test_acdc_removes_every_edge_below_tau_and_keeps_what_is_needed() -> None:
    """On the induction toy: a huge τ removes everything (the circuit is empty and scores as the
    corrupted run); a small τ keeps a circuit that recovers most of the behaviour."""
    model = load(pretrained("induction-2l"))
    task = induction_task(model, n=8, half=8)
    everything = acdc(model, task, threshold=1e9, progress=False)
    assert not everything.in_circuit.any() and everything.info["edges_tested"] == everything.n_edges
    kept = acdc(model, task, threshold=0.02, progress=False)
    assert 0 < int(kept.in_circuit.sum()) < kept.n_edges // 2
    faithful = circuit_faithfulness(model, task, kept)
    assert faithful.normalised > 0.5, faithful
    with pytest.raises(ConfigError, match="τ must be > 0"):
        acdc(model, task, threshold=0)


def test_induction_toy_methods_rank_the_induction_edges_high() -> None:
    """Trained toy, known heads (0.0 previous-token, 1.0–1.3 induction): every method's ROC AUC
    against the role edges is well above chance (the exact numbers are reported in the docs)."""
    model = load(pretrained("induction-2l"))
    task = induction_task(model, n=16, half=8)
    truth = ["input->a0.0<v>"] + [
        name
        for h in range(4)
        for name in (f"a0.0->a1.{h}<k>", f"input->a1.{h}<q>", f"input->a1.{h}<v>", f"a1.{h}->logits")
    ]
    for method in ("eap", "eap-ig"):
        assert edge_auroc(discover(model, task, method, progress=False), truth) > 0.8, method


def test_task_from_prompts_groups_by_length_and_names_a_misaligned_pair() -> None:
    model = load(pretrained("ioi"))
    clean = [
        "When Mary and John went to the store , John gave a drink to",
        "Mary and John found a key . John gave it to",
    ]
    corrupted = [
        "When Alice and Bob went to the store , Tom gave a drink to",
        "Alice and Bob found a key . Tom gave it to",
    ]

    def metric(logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, 5] - logits[:, -1, 6] + rows  # rows: which prompt pairs this batch holds

    task = task_from_prompts(model, clean, corrupted, metric, batch_size=8)
    assert task.n_prompts == 2 and len(task.batches) == 2  # two lengths: two batches
    with pytest.raises(InputError, match="pair 1 tokenizes to"):
        task_from_prompts(
            model, clean, [corrupted[0], "Alice and Bob found a key at the park . Tom gave it to"], metric
        )
    with pytest.raises(InputError, match="as many corrupted"):
        task_from_prompts(model, clean, corrupted[:1], metric)
    with pytest.raises(InputError, match="unknown discovery method"):
        discover(model, task, "magic")


def test_the_graph_must_fit_the_model() -> None:
    model = load(pretrained("ioi"))
    edges = EdgeModel(model, circuit_graph(model, split_qkv=False))
    assert all(port in ("",) for _, port in edges.layout.ports)  # one input per head when not split
