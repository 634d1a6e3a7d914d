"""Edge-level patching is exact: with nothing removed the logits are the model's own, with every
edge removed they are the corrupted run's, and one removed edge changes exactly what a hand
computation through the real modules says — on GPT-2, Llama (GQA), Qwen2 and Gemma."""

from __future__ import annotations

import pytest
import torch

from rama.circuits.edge_patching import EdgeModel, PortLayout, RunState, circuit_graph
from rama.circuits.graph import CircuitGraph, Edge, model_graph
from rama.errors import ConfigError, InputError
from tiny_models import hooked, random_tokens

ARCHS = ["gpt2", "llama", "qwen2", "gemma"]


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request: pytest.FixtureRequest) -> tuple[object, EdgeModel]:
    _, model = hooked(request.param)
    return model, EdgeModel(model, circuit_graph(model))


def test_nothing_removed_is_the_plain_run_and_everything_removed_is_the_corrupted_run(tiny) -> None:
    model, edges = tiny
    clean, corrupted = random_tokens(2, 10, seed=1), random_tokens(2, 10, seed=2)
    with torch.no_grad():
        plain, plain_corrupted = model(clean), model(corrupted)
    outputs = edges.sender_outputs(corrupted)
    n = edges.graph.n_edges
    none = edges.patched_logits(clean, torch.zeros(n, dtype=torch.bool), outputs)
    everything = edges.patched_logits(clean, torch.ones(n, dtype=torch.bool), outputs)
    assert torch.equal(none, plain)
    assert (plain - plain_corrupted).abs().max() > 0.01  # tiny random models: small logits
    torch.testing.assert_close(everything, plain_corrupted, atol=2e-5, rtol=1e-4)


def test_the_gradient_run_leaves_the_logits_unchanged(tiny) -> None:
    model, edges = tiny
    tokens = random_tokens(2, 10, seed=3)
    with torch.no_grad():
        plain = model(tokens)
    grads, values = edges.port_gradients(tokens, lambda logits: logits[:, -1, 5])
    torch.testing.assert_close(values, plain[:, -1, 5], atol=1e-5, rtol=1e-5)
    assert grads.shape == (len(edges.layout.ports), 2, 10, model.cfg.d_model)


def test_one_removed_edge_into_the_logits_matches_a_hand_computation() -> None:
    """Removing `input -> logits` only: the final norm reads resid_final + (corrupted − clean) input."""
    _, model = hooked("llama")
    edges = EdgeModel(model, circuit_graph(model))
    clean, corrupted = random_tokens(2, 8, seed=4), random_tokens(2, 8, seed=5)
    removed = torch.tensor([e.name == "input->logits" for e in edges.graph.edges])
    patched = edges.patched_logits(clean, removed, edges.sender_outputs(corrupted))
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names=["blocks.1.hook_resid_post", "blocks.0.hook_resid_pre"])
        _, other = model.run_with_cache(corrupted, names=["blocks.0.hook_resid_pre"])
        resid = (
            cache["blocks.1.hook_resid_post"]
            + other["blocks.0.hook_resid_pre"]
            - cache["blocks.0.hook_resid_pre"]
        )
        expected = model.hf.lm_head(model.hf.model.norm(resid))
    torch.testing.assert_close(patched, expected, atol=1e-5, rtol=1e-5)


def test_a_removed_key_edge_changes_only_its_kv_group() -> None:
    """GQA (4 query heads, 2 kv heads): patching `input -> a1.2<k>` changes head 2's and 3's keys only."""
    _, model = hooked("llama")
    edges = EdgeModel(model, circuit_graph(model))
    assert ("a1.3", "k") not in edges.port_index and ("a1.2", "k") in edges.port_index
    clean, corrupted = random_tokens(1, 8, seed=6), random_tokens(1, 8, seed=7)
    removed = torch.tensor([e.name == "input->a1.2<k>" for e in edges.graph.edges])
    seen: dict[str, torch.Tensor] = {}
    state = RunState(edges.layout.removal_matrix(removed), edges.sender_outputs(corrupted))
    plan = [*edges.hooks(state), ("blocks.1.attn.hook_k", lambda k, point: seen.setdefault("k", k.detach()))]
    with torch.no_grad():
        model.run_with_hooks(clean, plan)
        _, cache = model.run_with_cache(clean, names=["blocks.1.attn.hook_k"])
    plain = cache["blocks.1.attn.hook_k"]
    assert torch.equal(seen["k"][:, :, 0], plain[:, :, 0])  # kv head 0 (query heads 0, 1) untouched
    assert (seen["k"][:, :, 1] - plain[:, :, 1]).abs().max() > 1e-3


def test_layout_and_graph_checks() -> None:
    graph = model_graph(2, 4, n_kv_heads=2)
    layout = PortLayout.of(graph)
    assert layout.senders[0] == "input" and layout.ports[-1] == ("logits", "")
    assert len(layout.ports) == 2 * (4 + 2 + 2 + 1) + 1  # per layer: 4 q, 2 k, 2 v ports and the MLP
    _, model = hooked("gpt2")
    with pytest.raises(InputError, match="build it with circuit_graph"):
        EdgeModel(model, model_graph(3, 4))
    _, bert = hooked("bert")
    with pytest.raises(ConfigError, match="post-norm"):
        EdgeModel(bert, circuit_graph(bert))


def test_graph_counts_edges_and_round_trips(tmp_path) -> None:
    graph = model_graph(2, 2)
    # senders: input, a0.0, a0.1, m0, a1.0, a1.1, m1. Layer 0 heads read input on q/k/v: 2·3·1;
    # m0 reads input, a0.*: 3; layer 1 heads read 4 senders on 3 ports: 2·3·4; m1 reads 6; logits 7
    assert graph.n_edges == 6 + 3 + 24 + 6 + 7
    scored = graph.with_scores(torch.arange(graph.n_edges).float(), method="test")
    chosen = scored.with_circuit(torch.arange(graph.n_edges) % 2 == 0)
    path = chosen.save(tmp_path / "graph.json")
    back = CircuitGraph.load(path)
    assert back.edges == chosen.edges and torch.equal(back.scores, chosen.scores)
    assert torch.equal(back.in_circuit, chosen.in_circuit) and back.info["method"] == "test"
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match="not a rama circuit graph"):
        CircuitGraph.load(tmp_path / "bad.json")
    with pytest.raises(InputError, match="does not have"):
        CircuitGraph(
            graph.nodes, [Edge("input", "nowhere")], torch.zeros(1), torch.zeros(1, dtype=torch.bool)
        )
