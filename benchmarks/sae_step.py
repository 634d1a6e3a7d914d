"""SAE training-step throughput on fixed, real activations, against SAELens and sparsify in one run.

    python benchmarks/sae_step.py [--tokens 409600] [--width 9216] [--k 32] [--json out.json]

Activations: SmolLM2-135M `blocks.6.hook_resid_post` on the built-in corpus (special tokens
excluded), harvested once. Every trainer sees the same batches (4,096 rows) for the same number of
tokens, with its own default recipe; FVU and dead latents are measured on 8,192 held-out rows.
Peers are skipped when not installed (`pip install sae-lens eai-sparsify` in a separate venv).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import torch

import rama
from rama.activations import HarvestConfig, harvest
from rama.sae import fit

Step = Callable[[torch.Tensor, int], None]
Reconstruct = Callable[[torch.Tensor], torch.Tensor]


def batches(data: torch.Tensor, batch_size: int, steps: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    out: list[torch.Tensor] = []
    while len(out) < steps:
        order = torch.randperm(data.shape[0], generator=generator)
        out += [data[order[i : i + batch_size]] for i in range(0, data.shape[0] - batch_size + 1, batch_size)]
    return out[:steps]


def held_out_scores(
    reconstruct: Reconstruct, codes: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> dict[str, float]:
    with torch.no_grad():
        error = (reconstruct(x) - x).pow(2).sum()
        active = codes(x) > 0
    return {
        "fvu": float(error / (x - x.mean(0)).pow(2).sum()),
        "dead_fraction": float(1 - active.any(0).float().mean()),
        "l0": float(active.sum(-1).float().mean()),
    }


def run_rama(
    architecture: str, train: torch.Tensor, test: torch.Tensor, args: Any, **recipe: Any
) -> dict[str, float]:
    start = time.perf_counter()
    sae = fit(
        train,
        architecture=architecture,
        d_sae=args.width,
        batch_size=args.batch_size,
        total_tokens=args.tokens,
        progress=False,
        **recipe,
    )
    seconds = time.perf_counter() - start
    return {"tokens_per_s": args.tokens / seconds, **held_out_scores(sae, sae.encode, test)}


def timed_loop(step: Step, data: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    for index, x in enumerate(data):
        step(x, index)
    return time.perf_counter() - start


def run_saelens(
    kind: str, data: list[torch.Tensor], test: torch.Tensor, args: Any
) -> dict[str, float] | None:
    try:
        from sae_lens.saes.sae import TrainStepInput
        from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
        from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    except ImportError:
        return None
    d_in = test.shape[1]
    if kind == "topk":
        sae: Any = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=args.width, k=args.k, device="cpu"))
        coefficients: dict[str, float] = {}
    else:
        sae = StandardTrainingSAE(
            StandardTrainingSAEConfig(d_in=d_in, d_sae=args.width, l1_coefficient=5.0, device="cpu")
        )
        coefficients = {"l1": 5.0}
    optimizer = torch.optim.Adam(sae.parameters(), lr=args.lr)
    since_fired = torch.zeros(args.width)

    def step(x: torch.Tensor, index: int) -> None:
        dead = since_fired > 10_000_000 // 4096
        out = sae.training_forward_pass(TrainStepInput(x, coefficients, dead, index, False))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        since_fired.add_(1).masked_fill_((out.feature_acts > 0).any(0), 0)

    seconds = timed_loop(step, data)
    return {
        "tokens_per_s": len(data) * args.batch_size / seconds,
        **held_out_scores(lambda x: sae(x), lambda x: sae.encode(x), test),
    }


def run_sparsify(data: list[torch.Tensor], test: torch.Tensor, args: Any) -> dict[str, float] | None:
    try:
        from sparsify import SaeConfig, SparseCoder
    except ImportError:
        return None
    sae = SparseCoder(test.shape[1], SaeConfig(num_latents=args.width, k=args.k), device="cpu")
    optimizer = torch.optim.Adam(sae.parameters(), lr=args.lr)
    since_fired = torch.zeros(args.width, dtype=torch.long)

    def step(x: torch.Tensor, index: int) -> None:
        out = sae(x, dead_mask=since_fired > 10_000_000)
        loss = out.fvu + out.auxk_loss / 32
        optimizer.zero_grad()
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        optimizer.step()
        sae.set_decoder_norm_to_unit_norm()
        since_fired.add_(x.shape[0])
        since_fired[out.latent_indices.flatten().unique()] = 0

    seconds = timed_loop(step, data)

    def codes(x: torch.Tensor) -> torch.Tensor:
        out = sae(x)
        return torch.zeros(x.shape[0], args.width).scatter_(1, out.latent_indices, out.latent_acts)

    return {
        "tokens_per_s": len(data) * args.batch_size / seconds,
        **held_out_scores(lambda x: sae(x).sae_out, codes, test),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=409_600)
    parser.add_argument("--width", type=int, default=9216)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument(
        "--harvest", type=int, default=73_728, help="activations harvested (train + 8,192 test)"
    )
    parser.add_argument("--json", default=None)
    parser.add_argument("--only", default=None, help="comma-separated name fragments, e.g. 'TopK'")
    args = parser.parse_args()
    args.lr = 2e-4 / (args.width / 16384) ** 0.5
    model = rama.load("smollm2-135m")
    acts = harvest(model, ["blocks.6.hook_resid_post"], HarvestConfig(tokens=args.harvest, progress=False))
    data = acts["blocks.6.hook_resid_post"]
    train, test = data[:-8192], data[-8192:]
    steps = args.tokens // args.batch_size
    shared = batches(train, args.batch_size, steps)
    runs = {
        "rama TopK": lambda: run_rama("topk", train, test, args, k=args.k),
        "rama ReLU-L1 (standard)": lambda: run_rama("standard", train, test, args, l1_coefficient=2.0),
        "rama JumpReLU": lambda: run_rama("jumprelu", train, test, args, l0_coefficient=2.0),
        "SAELens TopK": lambda: run_saelens("topk", shared, test, args),
        "SAELens standard": lambda: run_saelens("standard", shared, test, args),
        "sparsify SparseCoder (TopK)": lambda: run_sparsify(shared, test, args),
    }
    wanted = [
        name for name in runs if args.only is None or any(word in name for word in args.only.split(","))
    ]
    results: dict[str, dict[str, float] | None] = {name: runs[name]() for name in wanted}
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine, "args": vars(args), "results": results}, handle, indent=2)
    print(
        f"\nmachine: {machine}; d_in 576 -> {args.width} latents, k {args.k}, batch {args.batch_size}, "
        f"{args.tokens} tokens on {train.shape[0]} harvested activations"
    )
    print("| trainer | tokens/s | held-out FVU | L0 | dead latents |\n|---|---|---|---|---|")
    for name, row in results.items():
        if row is not None:
            print(
                f"| {name} | {row['tokens_per_s']:.0f} | {row['fvu']:.3f} | {row['l0']:.1f} | {row['dead_fraction']:.1%} |"
            )
    base = results.get("rama TopK")
    for peer in ("SAELens TopK", "sparsify SparseCoder (TopK)"):
        row = results.get(peer)
        if base is None:
            break
        if row is not None:
            print(f"- rama TopK ÷ {peer} tokens/s: {base['tokens_per_s'] / row['tokens_per_s']:.2f}")


if __name__ == "__main__":
    main()
