"""The hand-set oracle: its ground truth checked edge by edge. Each edge of the model graph is patched
alone (the destination's input at one port becomes clean residual + corrupted − clean output of the
upstream node, recomputed through the destination's LayerNorm): the four true edges move the metric by
about the whole clean−corrupted gap, every other edge by less than 1e-5."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn.functional import layer_norm

import rama
from rama.circuits.graph import Edge, model_graph
from rama.errors import InputError, OutputError
from rama.interventions.logit_metrics import logit_difference
from rama.toys.oracle import (
    BIAS,
    D_MODEL,
    MARKER,
    N_VOCAB,
    SOFT_SCORE,
    TRUE_EDGES,
    UNEMBED,
    OracleTask,
    build_oracle,
    oracle_direction,
    oracle_prompts,
    residual_basis,
    save_oracle,
    task_from_ground_truth,
)
from rama.toys.toy_transformer import load_ground_truth

Key = tuple[str, str]  # (destination node, port)
Patch = tuple[slice, Callable[[], torch.Tensor]]  # (batch rows, () -> delta [rows, pos, d_model])
PORTS = {"q": 0, "k": 1, "v": 2}


@pytest.fixture(scope="module")
def oracle() -> tuple[Any, OracleTask, dict[str, Any]]:
    model, _, task, truth = build_oracle()
    return model, task, truth


@contextmanager
def capturing(model: Any, found: dict[str, torch.Tensor]) -> Iterator[None]:
    """While open, each forward pass stores every graph node's write to the residual stream in
    `found`, `[batch, pos, d_model]` (input: the embeddings)."""
    blocks, d_head = model.transformer.h, D_MODEL // model.config.n_head
    handles = [blocks[0].ln_1.register_forward_pre_hook(lambda _m, args: found.update(input=args[0]))]
    for layer, block in enumerate(blocks):

        def heads(_m: Any, args: tuple[torch.Tensor], layer: int = layer) -> None:
            w_o = blocks[layer].attn.c_proj.weight  # [d_model (z), d_model]
            for h in range(model.config.n_head):
                part = slice(h * d_head, (h + 1) * d_head)
                found[f"a{layer}.{h}"] = args[0][..., part] @ w_o[part]

        handles.append(block.attn.c_proj.register_forward_pre_hook(heads))
        handles.append(
            block.mlp.register_forward_hook(lambda _m, _a, out, n=f"m{layer}": found.update({n: out}))
        )
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def node_outputs(model: Any, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    found: dict[str, torch.Tensor] = {}
    with capturing(model, found):
        model(input_ids=tokens)
    return found


def fixed(delta: torch.Tensor) -> Callable[[], torch.Tensor]:
    return lambda: delta


def _norm(module: Any, x: torch.Tensor) -> torch.Tensor:
    return layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)


@contextmanager
def patched(model: Any, deltas: dict[Key, Patch]) -> Iterator[None]:
    """For each `(node, port): (rows, delta)`, the batch rows `rows` of that node read the residual
    plus `delta()` through that port only (the residual is passed through the node's own norm again).
    `delta` is called when the node reads, so it may use what the same pass has computed so far."""
    blocks, handles = model.transformer.h, []
    for (node, port), (rows, delta) in deltas.items():
        if node == "logits" or node.startswith("m"):
            norm = model.transformer.ln_f if node == "logits" else blocks[int(node[1:])].ln_2

            def renorm(
                m: Any, a: Any, out: torch.Tensor, r: slice = rows, d: Callable = delta
            ) -> torch.Tensor:
                out = out.clone()
                out[r] = _norm(m, a[0][r] + d())
                return out

            handles.append(norm.register_forward_hook(renorm))
            continue
        layer, head = (int(p) for p in node[1:].split("."))
        block, seen, d_head = blocks[layer], {}, D_MODEL // model.config.n_head
        handles.append(block.ln_1.register_forward_pre_hook(lambda _m, a, s=seen: s.update(x=a[0])))
        start = PORTS[port] * D_MODEL + head * d_head

        def swap(
            m: Any,
            _a: Any,
            out: torch.Tensor,
            blk: Any = block,
            s: dict = seen,
            c: slice = slice(start, start + d_head),
            r: slice = rows,
            d: Callable = delta,
        ) -> torch.Tensor:
            out = out.clone()
            out[r, :, c] = _norm(blk.ln_1, s["x"][r] + d()) @ m.weight[:, c] + m.bias[c]
            return out

        handles.append(block.attn.c_attn.register_forward_hook(swap))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def circuit_metric(
    model: Any, task: OracleTask, run: torch.Tensor, source: torch.Tensor, edges: list[Edge]
) -> float:
    """The metric of `run` with every edge in `edges` carrying `source`'s output of its upstream node
    instead of this pass's own (ACDC's removed edges): delta = source − this pass's output, taken live,
    so an edge whose upstream node is itself patched is not counted twice."""
    now: dict[str, torch.Tensor] = {}
    ups: dict[Key, list[str]] = {}
    for edge in edges:
        ups.setdefault((edge.downstream, edge.port), []).append(edge.upstream)
    with torch.no_grad():
        other = node_outputs(model, source)
        deltas: dict[Key, Patch] = {
            key: (slice(None), lambda us=us: sum(other[u] - now[u] for u in us)) for key, us in ups.items()
        }
        with capturing(model, now), patched(model, deltas):
            return float(task.metric(model(input_ids=run).logits))


def patched_metric(
    model: Any, task: OracleTask, tokens: torch.Tensor, deltas: dict[Key, Patch]
) -> torch.Tensor:
    with patched(model, deltas):
        return task.metric(model(input_ids=tokens).logits)


def edge_effects(model: Any, task: OracleTask, run: torch.Tensor, source: torch.Tensor) -> dict[str, float]:
    """Edge name -> metric(run with that edge alone from `source`) − metric(run). All edges in one
    forward pass: copy i of the batch patches edge i only (a destination's edges are adjacent)."""
    edges, b = model_graph(2, model.config.n_head).edges, run.shape[0]
    with torch.no_grad():
        base, other = node_outputs(model, run), node_outputs(model, source)
        plain = float(task.metric(model(input_ids=run).logits))
        parts: dict[Key, list[tuple[int, torch.Tensor]]] = {}
        for i, edge in enumerate(edges):
            parts.setdefault((edge.downstream, edge.port), []).append(
                (i, other[edge.upstream] - base[edge.upstream])
            )
        deltas = {
            key: (slice(got[0][0] * b, (got[-1][0] + 1) * b), fixed(torch.cat([d for _, d in got])))
            for key, got in parts.items()
        }
        with patched(model, deltas):
            logits = model(input_ids=run.repeat(len(edges), 1)).logits  # [edge * batch, pos, vocab]
    answer, wrong = task.answer_ids.repeat(len(edges)), task.wrong_ids.repeat(len(edges))
    metric = logit_difference(logits, answer, wrong).view(len(edges), b).mean(1)  # [edge]
    return {e.name: float(m) - plain for e, m in zip(edges, metric, strict=True)}


def test_the_oracle_does_its_task_as_computed_by_hand(oracle: tuple[Any, OracleTask, dict[str, Any]]) -> None:
    model, task, truth = oracle
    model.set_attn_implementation("eager")  # for the attention weights
    try:
        out = model(input_ids=task.clean_tokens, output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")
    previous = out.attentions[0][:, 1]  # [batch, q, k]: a0.1, one-hot on the previous position
    assert torch.equal(previous[:, 1:], torch.eye(6)[:-1].expand(len(task.clean), 5, 6))
    target = math.exp(SOFT_SCORE) / (math.exp(SOFT_SCORE) + 5)  # 6 positions, one scores SOFT_SCORE
    after_marker = torch.tensor([c.split().index(MARKER) + 2 for c in task.clean])
    mover = out.attentions[1][:, 0, -1]  # [batch, k]: a1.0 at `end`
    assert torch.allclose(
        mover[torch.arange(len(after_marker)), after_marker], torch.tensor(target), atol=1e-6
    )
    # final residual: bias 16, eight unit writes (token, position, a0.0-2, a1.1-3), the answer block Σ p²
    squared = BIAS**2 + 8 + target**2 + 5 * ((1 - target) / 5) ** 2
    by_hand = UNEMBED * target / math.sqrt(2 * squared / D_MODEL + 1e-5)
    assert truth["clean_metric"] == pytest.approx(by_hand, rel=1e-5)
    assert truth["corrupted_metric"] == pytest.approx(-by_hand, rel=1e-5)
    assert by_hand > 5
    content = out.logits[:, -1, 6:]  # the content words w0..w5 come after 4 specials, key and end
    assert torch.equal(content.argmax(-1) + 6, task.answer_ids)


def test_the_distractors_change_but_nothing_reads_them(
    oracle: tuple[Any, OracleTask, dict[str, Any]],
) -> None:
    """So that a method scoring by "did this node's output change" fails the oracle."""
    model, task, truth = oracle
    with torch.no_grad():
        clean, corrupted = node_outputs(model, task.clean_tokens), node_outputs(model, task.corrupted_tokens)
    change = {node: (corrupted[node] - clean[node]).abs().amax(dim=(0, 2)) for node in clean}  # [pos]
    for node in ("input", "a0.0", "a0.1"):  # layer 0 writes differ before `end`
        assert float(change[node][:-1].max()) > 0.5, node
    for node in ("a1.0", "a1.1", "a1.3"):  # layer 1 writes differ at `end`, where the metric reads
        assert float(change[node][-1]) > 0.5, node
    for node in ("a0.2", "a0.3", "m0", "m1"):  # constant or zero
        assert float(change[node].max()) == 0, node
    assert float(change["a1.2"].max()) < 1e-6  # looks at the marker (which moves) but moves a constant
    unsplit = {e.name for e in model_graph(2, 4, split_qkv=False).edges}
    assert set(truth["true_edges_unsplit"]) <= unsplit and len(truth["true_edges_unsplit"]) == 4


def test_the_patching_helper_recovers_the_clean_and_the_corrupted_run(
    oracle: tuple[Any, OracleTask, dict[str, Any]],
) -> None:
    model, task, truth = oracle
    clean, corrupted, edges = task.clean_tokens, task.corrupted_tokens, model_graph(2, 4).edges
    assert circuit_metric(model, task, clean, clean, edges) == truth["clean_metric"]  # patches of nothing
    assert circuit_metric(model, task, clean, corrupted, edges) == pytest.approx(
        truth["corrupted_metric"], abs=1e-5
    )
    assert circuit_metric(model, task, corrupted, clean, edges) == pytest.approx(
        truth["clean_metric"], abs=1e-5
    )


def test_the_true_edges_alone_are_the_whole_circuit(oracle: tuple[Any, OracleTask, dict[str, Any]]) -> None:
    """Faithfulness 1: with every other edge removed (corrupted) the metric stays clean, and removing
    the four true edges together gives the corrupted metric."""
    model, task, truth = oracle
    edges = model_graph(2, 4).edges
    others = [e for e in edges if e.name not in TRUE_EDGES]
    true = [e for e in edges if e.name in TRUE_EDGES]
    clean, corrupted = task.clean_tokens, task.corrupted_tokens
    assert circuit_metric(model, task, clean, corrupted, others) == pytest.approx(
        truth["clean_metric"], abs=1e-5
    )
    assert circuit_metric(model, task, clean, corrupted, true) == pytest.approx(
        truth["corrupted_metric"], abs=1e-5
    )


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("direction", ["noising", "denoising"])
def test_only_the_true_edges_carry_the_task(
    oracle: tuple[Any, OracleTask, dict[str, Any]], direction: str, attention: str
) -> None:
    model, task, truth = build_oracle()[0], oracle[1], oracle[2]
    model.set_attn_implementation(attention)
    run, source = (task.clean_tokens, task.corrupted_tokens)
    if direction == "denoising":
        run, source = source, run
    effects = edge_effects(model, task, run, source)
    gap = truth["clean_metric"] - truth["corrupted_metric"]
    assert len(effects) == 110 and set(TRUE_EDGES) <= set(effects)
    for name, effect in effects.items():
        if name in TRUE_EDGES:  # each carries the whole gap alone (the path is a chain)
            assert abs(effect) > 0.3 * gap, name
        else:
            assert abs(effect) < 1e-5, (name, effect)


def test_the_edge_check_catches_a_model_whose_distractor_is_read() -> None:
    """The check can fail: let the unembedding also read a1.3's block a little."""
    model, _, task, _ = build_oracle()
    basis = residual_basis()
    with torch.no_grad():
        for word in range(N_VOCAB):
            model.lm_head.weight[word] += 0.1 * basis[:, oracle_direction("self2", word)]
    effects = edge_effects(model, task, task.clean_tokens, task.corrupted_tokens)
    leaks = {name for name, effect in effects.items() if name not in TRUE_EDGES and abs(effect) > 1e-3}
    assert leaks == {"input->a0.0<v>", "a0.0->a1.3<v>", "a1.3->logits"}


def test_first_order_edge_scores_rank_the_true_edges_first(
    oracle: tuple[Any, OracleTask, dict[str, Any]],
) -> None:
    """EAP's score (gradient at the clean run · corrupted − clean upstream output) sees the true edges
    far above the distractors, whose only gradient is the small one through the norms' scale."""
    model, task, _ = oracle
    graph = model_graph(2, 4)
    with torch.no_grad():
        clean, corrupted = node_outputs(model, task.clean_tokens), node_outputs(model, task.corrupted_tokens)
    zeros = {
        (e.downstream, e.port): torch.zeros_like(clean["input"], requires_grad=True) for e in graph.edges
    }
    patched_metric(
        model, task, task.clean_tokens, {k: (slice(None), fixed(z)) for k, z in zeros.items()}
    ).backward()
    scores = {
        e.name: float(
            (zeros[(e.downstream, e.port)].grad * (corrupted[e.upstream] - clean[e.upstream])).sum()
        )
        for e in graph.edges
    }
    true = [abs(scores[name]) for name in TRUE_EDGES]
    others = [abs(s) for name, s in scores.items() if name not in TRUE_EDGES]
    assert min(true) > 10 * max(others)


def test_the_saved_oracle_loads_with_rama(
    tmp_path: Path, oracle: tuple[Any, OracleTask, dict[str, Any]]
) -> None:
    _, task, truth = oracle
    folder = save_oracle(tmp_path / "oracle")
    saved = load_ground_truth(folder)
    assert saved == truth and set(saved["true_edges"]) <= set(model_graph(2, 4).edge_index())
    loaded = task_from_ground_truth(saved)
    assert torch.equal(loaded.clean_tokens, task.clean_tokens) and torch.equal(
        loaded.wrong_ids, task.wrong_ids
    )
    hooked = rama.load(folder)
    assert torch.equal(hooked.to_tokens(list(task.clean)), task.clean_tokens)
    logits, cache = hooked.run_with_cache(task.clean_tokens, names="blocks.1.attn.hook_z")
    assert float(task.metric(logits.detach())) == pytest.approx(truth["clean_metric"], abs=1e-6)
    assert cache["blocks.1.attn.hook_z"].shape == (12, 6, 4, 42)  # [batch, pos, head, d_head]
    with pytest.raises(OutputError):
        save_oracle(folder)


def test_bad_input_is_refused() -> None:
    with pytest.raises(InputError, match="at least one prompt pair"):
        oracle_prompts(0)
    with pytest.raises(InputError, match="not the oracle"):
        task_from_ground_truth({"task": "induction"})
