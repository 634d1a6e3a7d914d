"""Edge-level interventions on a real model: each receiving port reads its own copy of the residual.

A head's query reads `ln1(resid_pre)`. To patch the single edge `u -> a7.4<q>` only head 7.4's
query may see `u`'s corrupted output, so that port's input is rebuilt as
`ln1(resid_pre + Σ_removed (corrupted_u − current_u)) W_Q[4] + b_Q[4]` and written into the
head's slice of `hook_q`; every other head keeps the model's own value. `current_u` is `u`'s
output in this very run (upstream patches propagate), `corrupted_u` its output on the corrupted
prompt (ACDC's and auto-circuit's convention). MLPs are rebuilt at `ln2.hook_normalized`, the logits
at `ln_final.hook_normalized`. The norms are the model's own modules (their `forward`, which
bypasses hooks), the projections its own weights (`rama.models.head_weights`), so with nothing
removed the logits equal the plain run's (tested).

For gradients (EAP, EAP-IG) every port gets a zero tensor added to its input; the gradient of the
metric with respect to it is the gradient with respect to that port's input alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from rama.circuits.graph import CircuitGraph, model_graph
from rama.errors import ConfigError, InputError
from rama.hooks import HookFn
from rama.hooks.core import HookPoint
from rama.hooks.model import HookedModel
from rama.models.head_weights import HeadWeights, head_weights
from rama.models.sites import block_site

Port = tuple[str, str]  # (node name, "q" | "k" | "v" | "")


@dataclass(frozen=True)
class PortLayout:
    """Index tables between a graph and the model's tensors: senders (nodes whose output is a
    residual-stream term) and receiving ports, each in forward order, and every edge's pair."""

    senders: list[str]
    ports: list[Port]
    edge_sender: torch.Tensor  # [n_edges] long, index into senders
    edge_port: torch.Tensor  # [n_edges] long, index into ports

    @staticmethod
    def of(graph: CircuitGraph) -> PortLayout:
        order = {n.name: i for i, n in enumerate(graph.nodes)}
        senders = sorted({e.upstream for e in graph.edges}, key=order.__getitem__)
        port_set = {(e.downstream, e.port) for e in graph.edges}
        ports = sorted(port_set, key=lambda p: (order[p[0]], "qkv".find(p[1])))
        sender_index = {s: i for i, s in enumerate(senders)}
        port_index = {p: i for i, p in enumerate(ports)}
        return PortLayout(
            senders,
            ports,
            torch.tensor([sender_index[e.upstream] for e in graph.edges], dtype=torch.long),
            torch.tensor([port_index[(e.downstream, e.port)] for e in graph.edges], dtype=torch.long),
        )

    def removal_matrix(self, removed: torch.Tensor) -> torch.Tensor:
        """`[n_ports, n_senders]` float: 1 where the edge sender -> port is removed (patched)."""
        matrix = torch.zeros(len(self.ports), len(self.senders))
        matrix[self.edge_port[removed], self.edge_sender[removed]] = 1.0
        return matrix


@dataclass
class RunState:
    """What one edge-patched forward pass needs and records."""

    removal: torch.Tensor  # [n_ports, n_senders]
    corrupted: torch.Tensor | None  # [n_senders, batch, pos, d_model] senders' corrupted outputs
    leaves: list[torch.Tensor] | None = None  # per port, [batch, pos, d_model] zeros requiring grad
    input_override: torch.Tensor | None = None  # [batch, pos, d_model] the input node's output
    record: bool = False  # keep every sender's output in `outputs`
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)
    diffs: torch.Tensor | None = None  # [n_senders, batch, pos, d_model] corrupted − current, patched senders
    residual: dict[str, torch.Tensor] = field(default_factory=dict)


class EdgeModel:
    """A model prepared for edge-level runs of one graph: weights, norms and hook plan."""

    def __init__(self, model: HookedModel, graph: CircuitGraph) -> None:
        cfg = model.cfg
        if cfg.parallel_attn_mlp or model.adapter.block_paths().resid_mid is not None:
            raise ConfigError(
                f"{cfg.name or cfg.model_type}: edge patching supports sequential pre-norm blocks (GPT-2, "
                "Llama, SmolLM2, Qwen, Gemma); parallel attention/MLP and post-norm blocks are not supported"
            )
        info = graph.info
        if (info.get("n_layers"), info.get("n_heads")) != (cfg.n_layers, cfg.n_heads):
            raise InputError(
                f"the graph was built for {info.get('n_layers')} layers × {info.get('n_heads')} heads; this "
                f"model has {cfg.n_layers} × {cfg.n_heads}: build it with circuit_graph(model)"
            )
        self.model, self.graph, self.layout = model, graph, PortLayout.of(graph)
        self.weights: HeadWeights = head_weights(model.adapter, fold_norm=False)
        self.group = cfg.n_heads // cfg.n_kv_heads
        self.sender_index = {s: i for i, s in enumerate(self.layout.senders)}
        self.port_index = {p: i for i, p in enumerate(self.layout.ports)}
        paths = model.adapter.block_paths()
        self.ln1 = [
            model.hf.get_submodule(f"{model.adapter.block_path(i)}.{paths.ln1}") for i in range(cfg.n_layers)
        ]
        self.ln2 = [
            model.hf.get_submodule(f"{model.adapter.block_path(i)}.{paths.ln2}") for i in range(cfg.n_layers)
        ]
        final = model.adapter.final_sites()["ln_final.hook_normalized"]
        self.ln_final: nn.Module = model.hf.get_submodule(getattr(final, "path"))  # noqa: B009

    # ---- one forward pass ----------------------------------------------------------------------

    def run(self, tokens: torch.Tensor, state: RunState) -> torch.Tensor:
        """Logits `[batch, pos, d_vocab]` of `tokens` with the state's edges patched."""
        return self.model.run_with_hooks(tokens, self.hooks(state))

    def hooks(self, state: RunState) -> list[tuple[str, HookFn]]:
        cfg = self.model.cfg
        plan: list[tuple[str, HookFn]] = [(block_site(0, "hook_resid_pre"), self._input_hook(state))]
        for layer in range(cfg.n_layers):
            plan.append((block_site(layer, "hook_resid_pre"), self._keep(state, f"pre{layer}")))
            for name in ("q", "k", "v"):
                plan.append(
                    (block_site(layer, f"attn.hook_{name}"), self._head_port_hook(state, layer, name))
                )
            plan.append((block_site(layer, "attn.hook_result"), self._heads_hook(state, layer)))
            plan.append((block_site(layer, "hook_resid_mid"), self._keep(state, f"mid{layer}")))
            plan.append((block_site(layer, "ln2.hook_normalized"), self._norm_port_hook(state, layer)))
            plan.append((block_site(layer, "hook_mlp_out"), self._mlp_hook(state, layer)))
        plan.append((block_site(cfg.n_layers - 1, "hook_resid_post"), self._keep(state, "final")))
        plan.append(("ln_final.hook_normalized", self._norm_port_hook(state, None)))
        return plan

    def _keep(self, state: RunState, key: str) -> HookFn:
        def hook(activation: torch.Tensor, point: HookPoint) -> None:
            state.residual[key] = activation

        return hook

    def _sent(self, state: RunState, name: str, value: torch.Tensor) -> None:
        """Record a sender's output as this run produced it (and its diff where it is patched)."""
        index = self.sender_index.get(name)
        if index is None:
            return
        if state.record:
            state.outputs[index] = value.detach()
        if state.corrupted is not None and bool(state.removal[:, index].any()):
            if state.diffs is None:
                state.diffs = torch.zeros(len(self.layout.senders), *value.shape, dtype=value.dtype)
            state.diffs[index] = state.corrupted[index].to(value.dtype) - value.detach()

    def _input_hook(self, state: RunState) -> HookFn:
        def hook(activation: torch.Tensor, point: HookPoint) -> torch.Tensor:
            value = activation if state.input_override is None else state.input_override.to(activation.dtype)
            self._sent(state, "input", value)
            return value

        return hook

    def _heads_hook(self, state: RunState, layer: int) -> HookFn:
        def hook(result: torch.Tensor, point: HookPoint) -> None:  # [batch, pos, head, d_model]
            for head in range(result.shape[2]):
                self._sent(state, f"a{layer}.{head}", result[:, :, head])

        return hook

    def _mlp_hook(self, state: RunState, layer: int) -> HookFn:
        def hook(out: torch.Tensor, point: HookPoint) -> None:
            self._sent(state, f"m{layer}", out)

        return hook

    def _deltas(self, state: RunState, ports: list[int]) -> tuple[list[int], torch.Tensor | None]:
        """(the ports whose input changes, their changes `[n, batch, pos, d_model]`): the removed
        edges' diffs, summed as one matrix product, plus the gradient leaves."""
        patched = state.removal[ports].any(1).tolist()
        changed = [p for p, hit in zip(ports, patched, strict=True) if hit or state.leaves is not None]
        if not changed:
            return [], None
        delta: torch.Tensor | None = None
        if state.diffs is not None and any(patched):
            flat = state.removal[changed].to(state.diffs.dtype) @ state.diffs.flatten(1)
            delta = flat.view(len(changed), *state.diffs.shape[1:])
        if state.leaves is not None:
            leaves = torch.stack([state.leaves[p] for p in changed])
            delta = leaves if delta is None else delta + leaves
        return changed, delta

    def _head_port_hook(self, state: RunState, layer: int, which: str) -> HookFn:
        n_heads = self.model.cfg.n_heads
        owners = [h for h in range(n_heads) if which == "q" or h % self.group == 0]
        ports = {h: self.port_index.get((f"a{layer}.{h}", which)) for h in owners}
        wanted = {h: p for h, p in ports.items() if p is not None}

        def hook(activation: torch.Tensor, point: HookPoint) -> torch.Tensor | None:  # [b, pos, head, d_head]
            changed, delta = self._deltas(state, list(wanted.values()))
            if delta is None:
                return None
            owner = {p: h for h, p in wanted.items()}
            heads = [owner[p] for p in changed]
            slots = heads if which == "q" else [h // self.group for h in heads]
            normed = self.ln1[layer].forward(state.residual[f"pre{layer}"][None] + delta)  # [n, b, pos, d]
            out = activation.clone()
            out[:, :, slots] = self._project(layer, which, slots, normed).to(out.dtype)
            return out

        return hook

    def _project(self, layer: int, which: str, slots: list[int], normed: torch.Tensor) -> torch.Tensor:
        """`[batch, pos, n, d_head]`: projections `slots` of their own inputs `normed [n, batch, pos, d_model]`."""
        w = {"q": self.weights.W_Q, "k": self.weights.W_K, "v": self.weights.W_V}[which][layer, slots]
        b = {"q": self.weights.b_Q, "k": self.weights.b_K, "v": self.weights.b_V}[which]
        projected = torch.einsum("nbpd,nde->bpne", normed.float(), w)
        return projected if b is None else projected + b[layer, slots]

    def _norm_port_hook(self, state: RunState, layer: int | None) -> HookFn:
        port = self.port_index.get((f"m{layer}", "") if layer is not None else ("logits", ""))
        norm = self.ln_final if layer is None else self.ln2[layer]
        key = "final" if layer is None else f"mid{layer}"

        def hook(activation: torch.Tensor, point: HookPoint) -> torch.Tensor | None:
            if port is None:
                return None
            _, delta = self._deltas(state, [port])
            if delta is None:
                return None
            return norm.forward(state.residual[key] + delta[0]).to(activation.dtype)

        return hook

    # ---- whole runs ----------------------------------------------------------------------------

    def sender_outputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """`[n_senders, batch, pos, d_model]`: every sender's output on a plain run of `tokens`."""
        state = RunState(torch.zeros(len(self.layout.ports), len(self.layout.senders)), None, record=True)
        with torch.no_grad():
            self.run(tokens, state)
        return torch.stack([state.outputs[i] for i in range(len(self.layout.senders))])

    def patched_logits(
        self, tokens: torch.Tensor, removed: torch.Tensor, corrupted_outputs: torch.Tensor
    ) -> torch.Tensor:
        """Logits with every `removed [n_edges]` edge reading its sender's corrupted output."""
        state = RunState(self.layout.removal_matrix(removed), corrupted_outputs)
        with torch.no_grad():
            return self.run(tokens, state)

    def port_gradients(
        self,
        tokens: torch.Tensor,
        metric: Callable[[torch.Tensor], torch.Tensor],
        input_override: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(`[n_ports, batch, pos, d_model]` gradient of `metric(logits).sum()` with respect to each
        port's input, the metric's per-prompt values `[batch]`)."""
        batch, pos = tokens.shape
        shape = (batch, pos, self.model.cfg.d_model)
        leaves = [torch.zeros(shape, requires_grad=True) for _ in self.layout.ports]  # one leaf each:
        # slices of one big leaf would each allocate a full-size zero gradient in backward
        removal = torch.zeros(len(self.layout.ports), len(self.layout.senders))
        state = RunState(removal, None, leaves, input_override)
        with frozen_weights(self.model.hf), torch.enable_grad():
            values = metric(self.run(tokens, state))
            values.sum().backward()
        grads = torch.stack([torch.zeros(shape) if leaf.grad is None else leaf.grad for leaf in leaves])
        return grads, values.detach()


@contextmanager
def frozen_weights(module: nn.Module) -> Iterator[None]:
    """Parameters need no gradient while attributions are computed (saves the weight gradients)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def circuit_graph(model: HookedModel, split_qkv: bool = True) -> CircuitGraph:
    """The full edge graph of `model` (every head, MLP, the input and the logits)."""
    cfg = model.cfg
    graph = model_graph(cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, split_qkv, cfg.parallel_attn_mlp)
    graph.info["model"] = cfg.name or cfg.model_type
    return graph
