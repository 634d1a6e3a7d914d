"""Latent sharding (model parallel): each rank holds a slice of a TopK SAE's dictionary.

Rank r of N holds `W_enc[:, s]`, `b_enc[s]` and `W_dec[s, :]` for its `d_sae / N` latents `s`;
`b_dec` (and a skip connection) is replicated. Every rank sees the same batch. A step: local
pre-activations, each rank's k largest as candidates (values with global ids), one all-gather of
the candidates, the global top-k over them (equal values: the lower global id wins), each rank
decodes the selected latents it holds, and one all-reduce sums the partial reconstructions. Loss,
metrics, fired latents and the replicated weights' gradients are then identical on every rank, so
no gradient is averaged. Checkpoints and the returned SAE are whole (the slices gathered).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn import functional as F

from rama.distributed import all_reduce_tensor, world
from rama.distributed.collectives import guarded
from rama.errors import ConfigError
from rama.metrics import fvu_tensor
from rama.sae.base import SAE, LossOutput, TrainState, fired_latents, mse_fvu
from rama.sae.topk import GatherPre, TopKConfig, dense_codes, sparse_decode

MODE = "latent_sharded"  # what a checkpoint records
SHARDABLE = ("topk", "batchtopk")
SHARD_DIMS = {"W_enc": 1, "b_enc": 0, "W_dec": 0}  # the latent axis of each sliced weight


@dataclass(frozen=True)
class ShardLayout:
    """Which latents rank `rank` of `size` holds: `offset … offset + local - 1` of `d_sae`."""

    rank: int
    size: int
    d_sae: int

    @property
    def local(self) -> int:
        return self.d_sae // self.size

    @property
    def offset(self) -> int:
        return self.rank * self.local

    @property
    def latents(self) -> slice:
        return slice(self.offset, self.offset + self.local)


def check_shardable(architecture: str, d_sae: int, size: int) -> None:
    """A ConfigError, before any work, for what latent sharding cannot train."""
    if architecture not in SHARDABLE:
        raise ConfigError(
            f"parallel='latents' trains {', '.join(SHARDABLE)} SAEs only; got architecture "
            f"{architecture!r}: train it with parallel='data' (--parallel data)"
        )
    if d_sae % size:
        raise ConfigError(
            f"parallel='latents' splits d_sae={d_sae} latents evenly over the processes, and "
            f"{size} does not divide it: use a d_sae that is a multiple of {size} "
            f"(e.g. {(d_sae // size + 1) * size}) or a number of processes that divides {d_sae}"
        )


def gather_ranks(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """Every rank's `tensor`, stacked in rank order: `[size, *tensor.shape]`."""
    size = world().size
    if size == 1:
        return tensor.unsqueeze(0)
    parts = [torch.empty_like(tensor) for _ in range(size)]
    guarded(what, lambda: dist.all_gather(parts, tensor.contiguous()))
    return torch.stack(parts)


class SumOverShards(torch.autograd.Function):
    """Forward: the partial reconstructions summed over the ranks. Backward: the gradient unchanged,
    since every rank computes the same loss of the same sum, and d(sum)/d(partial) is the identity."""

    @staticmethod
    def forward(ctx: Any, partial: torch.Tensor) -> torch.Tensor:
        return all_reduce_tensor(partial.clone(), what="the all-reduce of the partial reconstructions")

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


class ShareInput(torch.autograd.Function):
    """Forward: the encoder input unchanged. Backward: its gradient summed over the ranks, since each
    rank's encoder slice contributes only its own latents' share (this makes b_dec's gradient whole)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return all_reduce_tensor(grad.clone(), what="the all-reduce of the encoder input's gradient")


def select_global(
    values: torch.Tensor, indices: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The `count` largest of every rank's candidates `[rows, c]` (values, global ids) per row; of
    equal values the lower global id wins. One all-gather (values and ids packed in float64, exact
    for ids below 2^53)."""
    packed = torch.stack([values.double(), indices.double()])  # [2, rows, c]
    every = gather_ranks(packed, "the all-gather of the top-k candidates")  # [size, 2, rows, c]
    every = every.permute(1, 2, 0, 3).reshape(2, values.shape[0], -1)
    by_id = every[1].argsort(dim=-1)
    candidates, ids = every[0].gather(-1, by_id), every[1].gather(-1, by_id)
    order = candidates.sort(dim=-1, descending=True, stable=True).indices[:, :count]
    return candidates.gather(-1, order).to(values.dtype), ids.gather(-1, order).long()


class LatentShard(SAE):
    """One rank's slice of a TopK SAE, trained with the others (`loss` is collective)."""

    settings: TopKConfig
    threshold: torch.Tensor  # BatchTopK only

    def __init__(self, full: SAE, layout: ShardLayout) -> None:
        if full.architecture not in SHARDABLE:  # normally refused earlier, by check_shardable
            check_shardable(full.architecture, full.cfg.d_sae, layout.size)
        super().__init__(dataclasses.replace(full.cfg, d_sae=layout.local))
        self.full_cfg, self.layout = full.cfg, layout
        assert isinstance(full.cfg.arch, TopKConfig)
        self.settings = full.cfg.arch
        self.batch_wide = full.architecture == "batchtopk"  # the batch's k·B largest, not k per token
        if self.batch_wide:
            self.register_buffer("threshold", torch.tensor(-1.0))
        with torch.no_grad():
            for name, value in full.state_dict().items():
                dim = SHARD_DIMS.get(name)
                part = value if dim is None else value.narrow(dim, layout.offset, layout.local)
                getattr(self, name).copy_(part)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Nothing: a shard's weights are copied from the whole SAE."""

    def top_per_row(self, pre: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The global top-`count` (values, global ids) `[rows, count]` of local pre-activations."""
        values, indices = pre.topk(min(count, self.layout.local), dim=-1, sorted=False)
        return select_global(values, indices + self.layout.offset, count)

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Dense codes `[..., d_sae]` (every latent, not only this rank's) from local pre-activations."""
        flat = pre.reshape(-1, pre.shape[-1])
        values, indices = self.top_per_row(flat, self.settings.k)
        codes = dense_codes(indices, values.relu(), self.layout.d_sae)
        return codes.view(*pre.shape[:-1], self.layout.d_sae)

    def decode_own(self, pre: torch.Tensor, x: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """The reconstruction `[batch, d_out]` of the `chosen` global ids, summed over the ranks: each
        decodes the ones it holds (the others weigh 0)."""
        local = chosen - self.layout.offset
        mine = (local >= 0) & (local < self.layout.local)
        local = local.where(mine, 0)
        values = GatherPre.apply(pre, x, self.W_enc, self.b_enc, local).relu()
        partial = sparse_decode(local, values.where(mine, 0.0), self.W_dec)
        return SumOverShards.apply(partial)

    def loss(self, x: torch.Tensor, target: torch.Tensor, state: TrainState) -> LossOutput:
        centred = ShareInput.apply(x - self.b_dec) if self.subtracts_b_dec else x
        if self.batch_wide:
            return self.batch_loss(x, centred, target, state)
        with torch.no_grad():
            pre = torch.addmm(self.b_enc, centred, self.W_enc)
        values, chosen = self.top_per_row(pre, self.settings.k)
        reconstruction = self.decode_own(pre, centred, chosen) + self.b_dec + self.skip(x)
        _, fvu = mse_fvu(reconstruction, target)
        aux = self.aux_loss(pre, centred, target - reconstruction, state.dead_mask())
        loss = fvu + self.settings.aux_k_coefficient * aux
        active = values > 0
        fired = fired_latents(chosen, active, self.layout.d_sae)
        l0 = active.sum(-1).float().mean()
        return LossOutput(loss, reconstruction, fired, {"fvu": fvu.detach(), "aux_k": aux.detach(), "l0": l0})

    def batch_loss(
        self, x: torch.Tensor, centred: torch.Tensor, target: torch.Tensor, state: TrainState
    ) -> LossOutput:
        """BatchTopK's loss (`rama.sae.batchtopk`): the global top k·B over flat ids `row·d_sae + latent`."""
        batch, d_sae, local = x.shape[0], self.layout.d_sae, self.layout.local
        pre = torch.addmm(self.b_enc, centred, self.W_enc)  # [batch, local], in the graph
        acts = pre.relu()
        count = min(batch * d_sae, self.settings.k * batch)
        values, flat = acts.detach().flatten().topk(min(count, batch * local), sorted=False)
        ids = flat // local * d_sae + self.layout.offset + flat % local
        kept, chosen = (t[0] for t in select_global(values[None], ids[None], count))
        rows, cols = chosen // d_sae, chosen % d_sae - self.layout.offset
        mine = (cols >= 0) & (cols < local)
        rows, cols = rows[mine], cols[mine]
        order = rows.argsort()
        rows, cols = rows[order], cols[order]
        counts = torch.bincount(rows, minlength=batch)
        partial = F.embedding_bag(
            cols,
            self.W_dec,
            torch.cumsum(counts, 0) - counts,
            per_sample_weights=acts[rows, cols],
            mode="sum",
        )
        reconstruction = SumOverShards.apply(partial) + self.b_dec + self.skip(x)
        _, fvu = mse_fvu(reconstruction, target)
        aux = self.aux_loss(pre.detach(), centred, target - reconstruction, state.dead_mask())
        self.move_threshold(kept)
        active = kept > 0
        fired = fired_latents(chosen % d_sae, active, d_sae)
        loss = fvu + self.settings.aux_k_coefficient * aux
        terms = {"fvu": fvu.detach(), "aux_k": aux.detach(), "l0": active.sum().float() / batch}
        return LossOutput(loss, reconstruction, fired, terms)

    @torch.no_grad()
    def move_threshold(self, kept: torch.Tensor, momentum: float = 0.99) -> None:
        """BatchTopK's running estimate of the smallest kept activation, from the global selection."""
        smallest = kept.masked_fill(kept <= 0, float("inf")).min()
        first = self.threshold < 0
        moved = torch.where(first, smallest, self.threshold * momentum + (1 - momentum) * smallest)
        if bool((kept > 0).any()):
            self.threshold.copy_(moved)

    def aux_loss(
        self, pre: torch.Tensor, x: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor | None
    ) -> torch.Tensor:
        """AuxK over the whole dictionary's dead latents (`dead [d_sae]`, the same on every rank):
        each rank's dead candidates, the global top `d_in / 2`, as `rama.sae.topk.aux_k_loss`."""
        k = 0 if dead is None else min(self.cfg.d_in // 2, int(dead.sum()))
        if dead is None or k == 0:
            return residual.new_zeros(())
        masked = pre.detach().masked_fill(~dead[self.layout.latents], float("-inf"))
        _, chosen = self.top_per_row(masked, k)
        estimate = self.decode_own(pre, x, chosen)
        return torch.nan_to_num(fvu_tensor(estimate, residual.detach()))


def param_names(optimizer: torch.optim.Optimizer, module: torch.nn.Module) -> list[str]:
    """The names of the optimiser's parameters, in the order its state dict numbers them."""
    name_of = {id(p): name for name, p in module.named_parameters()}
    return [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]


def reshape_optimizer_state(state: dict[str, Any], names: list[str], change: Any) -> dict[str, Any]:
    """A copy of an optimiser state dict whose per-parameter tensors along a latent axis went
    through `change(tensor, dim)` (slice or gather); scalars and replicated tensors are kept."""
    per_param: dict[int, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        dim = SHARD_DIMS.get(names[index])
        per_param[index] = {
            key: change(value, dim) if dim is not None and torch.is_tensor(value) and value.dim() else value
            for key, value in entry.items()
        }
    return {"state": per_param, "param_groups": state["param_groups"]}


def shard_optimizer_state(state: dict[str, Any], names: list[str], layout: ShardLayout) -> dict[str, Any]:
    """The whole SAE's optimiser state, sliced to this rank's latents."""
    return reshape_optimizer_state(
        state, names, lambda t, dim: t.narrow(dim, layout.offset, layout.local).clone()
    )


def gather_slices(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """The whole tensor from every rank's slice along `dim`."""
    return torch.cat(list(gather_ranks(tensor, "the all-gather of the SAE's slices")), dim=dim)


def gather_state(
    shard: LatentShard, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The whole SAE's state dict and optimiser state (collective: every rank calls it)."""
    names = param_names(optimizer, shard)
    return gather_weights(shard), reshape_optimizer_state(optimizer.state_dict(), names, gather_slices)


def gather_weights(shard: LatentShard) -> dict[str, torch.Tensor]:
    """The whole SAE's state dict from every rank's slice (collective)."""
    return {
        name: value if name not in SHARD_DIMS else gather_slices(value, SHARD_DIMS[name])
        for name, value in shard.state_dict().items()
    }


def whole_sae(shard: LatentShard) -> SAE:
    """The whole SAE, every rank's slice gathered (collective), on the shard's device."""
    sae = SAE.create(shard.full_cfg).to(shard.W_enc.device)
    sae.load_state_dict(gather_weights(shard))
    return sae
