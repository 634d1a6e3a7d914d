"""SAE training throughput and held-out quality on fixed, real activations: rama against SAELens
and sparsify, each on its own default recipe, in one run.

    python benchmarks/sae_step.py [--tokens 409600] [--width 9216] [--k 32] [--only TopK] [--json out.json]

Activations: SmolLM2-135M layer 6 (`peer_harness.activations`). Every trainer gets the same
training rows and token budget; the timed span is the same for all: building the trainer and all
its steps (not the harvest, not the scoring). FVU, L0 and dead latents are measured on 8,192
held-out rows by the harness. Recipes, as each library ships them:

- rama: `fit` defaults (Adam 2e-4/sqrt(d_sae/16384), warm-up and decay, geometric-median b_dec,
  AuxK 1/32, dead after min(1M, tokens/4) tokens).
- sparsify 1.3.3: its Trainer's step (ScheduleFree-wrapped SignSGD at 5e-3/sqrt(d_sae/16384),
  momentum 0.95; b_dec = the first batch's mean; no AuxK, since auxk_alpha defaults to 0;
  matmul precision "high"), evaluated with the ScheduleFree average weights as it saves them.
- SAELens: `SAETrainer` with its config defaults (Adam 3e-4, constant), fed the harness batches.

The peers' dead-latent windows (sparsify 10 M tokens; SAELens 1,000 steps) cannot trigger in a run
this short, so their dead fractions are the held-out measure only. Peers are skipped when not
installed: run in a venv with `sae-lens eai-sparsify` and rama (`pip install -e . --no-deps`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from peer_harness import activations, batches, held_out_scores, machine, run_arguments, table, timed
from rama.atomic import write_text
from rama.sae import fit
from rama.sae.topk import this_cpu_native_bf16

Scores = dict[str, Any]
RAMA_RECIPE = "rama defaults"


def run_rama(architecture: str, train: torch.Tensor, test: torch.Tensor, args: Any, **recipe: Any) -> Scores:
    sae, seconds = timed(
        lambda: fit(
            train,
            architecture=architecture,
            d_sae=args.width,
            batch_size=args.batch_size,
            total_tokens=args.tokens,
            progress=False,
            **recipe,
        )
    )
    return {"tokens_per_s": args.tokens / seconds, **held_out_scores(sae, sae.encode, test)}


def run_saelens(kind: str, data: list[torch.Tensor], test: torch.Tensor, args: Any) -> Scores | None:
    try:
        from sae_lens.config import SAETrainerConfig
        from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
        from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
        from sae_lens.training.sae_trainer import SAETrainer
    except ImportError:
        return None
    d_in = test.shape[1]

    def train() -> Any:
        if kind == "topk":
            sae: Any = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=args.width, k=args.k))
        else:
            sae = StandardTrainingSAE(
                StandardTrainingSAEConfig(d_in=d_in, d_sae=args.width, l1_coefficient=5.0)
            )
        cfg = SAETrainerConfig(
            total_training_samples=len(data) * args.batch_size,
            train_batch_size_samples=args.batch_size,
            device="cpu",
            lr_end=3e-4 / 10,  # what its runner config fills in (lr / 10); unused by the constant schedule
        )
        return SAETrainer(cfg, sae, iter(data)).fit()

    sae, seconds = timed(train)
    sae.eval()
    return {"tokens_per_s": len(data) * args.batch_size / seconds, **held_out_scores(sae, sae.encode, test)}


def sparsify_train(data: list[torch.Tensor], width: int, k: int) -> Any:
    """sparsify's Trainer step on given batches (its `fit` needs a model and token dataset)."""
    from schedulefree import ScheduleFreeWrapper
    from sparsify import SaeConfig, SparseCoder
    from sparsify.sign_sgd import SignSGD

    torch.set_float32_matmul_precision("high")  # as sparsify's Trainer.fit sets it
    sae = SparseCoder(data[0].shape[1], SaeConfig(num_latents=width, k=k), device="cpu")
    optimizer = ScheduleFreeWrapper(
        SignSGD([{"params": sae.parameters(), "lr": 5e-3 / (width / 2**14) ** 0.5}]), momentum=0.95
    )
    optimizer.train()
    sae.b_dec.data = data[0].mean(0)
    for x in data:
        sae.set_decoder_norm_to_unit_norm()
        out = sae(x=x, y=x, dead_mask=None, total_variance=(x - x.mean(0)).pow(2).sum())
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        optimizer.step()
        optimizer.zero_grad()
    optimizer.eval()  # the averaged weights, which sparsify saves
    torch.set_float32_matmul_precision("highest")
    return sae


def run_sparsify(data: list[torch.Tensor], test: torch.Tensor, args: Any) -> Scores | None:
    try:
        import sparsify  # noqa: F401
    except ImportError:
        return None
    sae, seconds = timed(lambda: sparsify_train(data, args.width, args.k))

    def codes(x: torch.Tensor) -> torch.Tensor:
        out = sae(x)
        return torch.zeros(x.shape[0], args.width).scatter_(1, out.latent_indices, out.latent_acts)

    return {
        "tokens_per_s": len(data) * args.batch_size / seconds,
        **held_out_scores(lambda x: sae(x).sae_out, codes, test),
    }


def native_only(run: Callable[[], Scores]) -> Scores | None:
    """The bf16 row only where the CPU multiplies bf16 natively (emulated, it is ~100x slower)."""
    if this_cpu_native_bf16() is False:
        print("skipped the bf16 selection row: this CPU has no native bf16 (avx512_bf16 / amx_bf16)")
        return None
    return run()


def runs(
    train: torch.Tensor, test: torch.Tensor, args: Any
) -> dict[str, tuple[str, Callable[[], Scores | None]]]:
    """Row name -> (its recipe, how to run it)."""
    shared = batches(train, args.batch_size, args.tokens // args.batch_size)
    return {
        "rama TopK": (RAMA_RECIPE, lambda: run_rama("topk", train, test, args, k=args.k)),
        "rama TopK, select_dtype=bfloat16": (
            RAMA_RECIPE + ", bf16 selection",
            lambda: native_only(
                lambda: run_rama("topk", train, test, args, k=args.k, select_dtype="bfloat16")
            ),
        ),
        "rama ReLU-L1 (standard)": (
            RAMA_RECIPE + ", l1_coefficient 2",
            lambda: run_rama("standard", train, test, args, l1_coefficient=2.0),
        ),
        "rama JumpReLU": (
            RAMA_RECIPE + ", l0_coefficient 2",
            lambda: run_rama("jumprelu", train, test, args, l0_coefficient=2.0),
        ),
        "SAELens TopK": ("SAETrainer defaults", lambda: run_saelens("topk", shared, test, args)),
        "SAELens standard": (
            "SAETrainer defaults, l1_coefficient 5",
            lambda: run_saelens("standard", shared, test, args),
        ),
        "sparsify SparseCoder (TopK)": (
            "sparsify Trainer defaults",
            lambda: run_sparsify(shared, test, args),
        ),
    }


def report(results: dict[str, Scores | None], recipes: dict[str, str]) -> None:
    rows = [
        [
            name,
            recipes[name],
            f"{r['tokens_per_s']:.0f}",
            f"{r['fvu']:.3f}",
            f"{r['l0']:.1f}",
            f"{r['dead_fraction']:.1%}",
        ]
        for name, r in results.items()
        if r is not None
    ]
    print(table(["trainer", "recipe", "tokens/s", "held-out FVU", "L0", "dead on held-out"], rows))
    for ours in ("rama TopK", "rama TopK, select_dtype=bfloat16"):
        for peer in ("SAELens TopK", "sparsify SparseCoder (TopK)"):
            mine, theirs = results.get(ours), results.get(peer)
            if mine is not None and theirs is not None:
                print(f"- {ours} ÷ {peer} tokens/s: {mine['tokens_per_s'] / theirs['tokens_per_s']:.2f}")


def main() -> None:
    parser = run_arguments(__doc__)
    parser.add_argument("--json", default=None)
    parser.add_argument("--only", default=None, help="comma-separated name fragments, e.g. 'TopK'")
    args = parser.parse_args()
    train, test = activations(args.harvest)
    planned = runs(train, test, args)
    wanted = [name for name in planned if args.only is None or any(w in name for w in args.only.split(","))]
    before = machine()
    results = {name: planned[name][1]() for name in wanted}
    after = machine()
    print(f"\nbefore: {before}\nafter: {after}")
    print(
        f"d_in 576 -> {args.width} latents, k {args.k}, batch {args.batch_size}, {args.tokens} tokens "
        f"on {train.shape[0]} harvested activations"
    )
    report(results, {name: planned[name][0] for name in wanted})
    if args.json:
        record = {"before": before, "after": after, "args": vars(args), "results": results}
        write_text(Path(args.json), json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
