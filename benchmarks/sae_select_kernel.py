"""TopK's bf16 candidate selection against the fp32 default, in one run on real activations.

    python benchmarks/sae_select_kernel.py [--tokens 409600] [--width 9216] [--k 32] [--profile]

Trains the same TopK SAE (SmolLM2-135M layer 6, `peer_harness.activations`) with
`select_dtype="float32"` and `"bfloat16"`; prints tokens/s and held-out FVU for each, how often the
bf16 pick agrees with the fp32 one on held-out rows of the trained SAE (with k and with 2k bf16
candidates re-ranked in fp32), and with `--profile` where each millisecond of one step goes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from peer_harness import activations, held_out_scores, machine, run_arguments, table, timed
from rama.atomic import write_text
from rama.sae import SAE, fit
from rama.sae.base import TrainState
from rama.sae.topk import exact_pre


def agreement(sae: SAE, x: torch.Tensor, k: int, candidates: int) -> float:
    """Fraction of the fp32 top-k (row, latent) pairs that a bf16 pick of `candidates` latents,
    re-ranked by their fp32 values, also keeps."""
    with torch.no_grad():
        centred = x - sae.b_dec
        exact = torch.addmm(sae.b_enc, centred, sae.W_enc).topk(k, dim=-1).indices
        low = torch.addmm(sae.b_enc.bfloat16(), centred.bfloat16(), sae.W_enc.bfloat16())
        picked = low.topk(candidates, dim=-1).indices.sort(dim=-1).values
        values = exact_pre(centred, sae.W_enc, sae.b_enc, picked)
        ours = picked.gather(1, values.topk(k, dim=-1).indices)
        chosen = torch.zeros(x.shape[0], sae.cfg.d_sae, dtype=torch.bool).scatter_(1, exact, True)
        return float(chosen.gather(1, ours).float().mean())


def step_profile(sae: SAE, x: torch.Tensor, steps: int = 3) -> str:
    """Self CPU time per op over `steps` forward+backward passes of the training loss."""
    state = TrainState(tokens_since_fired=torch.zeros(sae.cfg.d_sae))
    sae.train()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            sae.zero_grad()
            sae.loss(x, x, state).loss.backward()
    return str(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


def main() -> None:
    parser = run_arguments(__doc__)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--results", default="benchmarks/results/sae_select_kernel.json")
    args = parser.parse_args()
    train, test = activations(args.harvest)
    before = machine()
    rows, results = [], {}
    for dtype in ("float32", "bfloat16"):
        sae, seconds = timed(
            lambda dtype=dtype: fit(
                train,
                architecture="topk",
                d_sae=args.width,
                k=args.k,
                select_dtype=dtype,
                batch_size=args.batch_size,
                total_tokens=args.tokens,
                progress=False,
            )
        )
        scores = {"tokens_per_s": args.tokens / seconds, **held_out_scores(sae, sae.encode, test)}
        if dtype == "float32":
            scores["agreement_k"] = agreement(sae, test, args.k, args.k)
            scores["agreement_2k"] = agreement(sae, test, args.k, 2 * args.k)
        results[dtype] = scores
        rows.append([dtype, f"{scores['tokens_per_s']:.0f}", f"{scores['fvu']:.4f}", f"{scores['l0']:.1f}"])
        if args.profile:
            print(
                f"\n{dtype} step profile ({args.batch_size} rows):\n"
                + step_profile(sae, train[: args.batch_size])
            )
    print(f"\nbefore: {before}\nafter: {machine()}")
    print(f"d_in 576 -> {args.width} latents, k {args.k}, batch {args.batch_size}, {args.tokens} tokens")
    print(table(["select_dtype", "tokens/s", "held-out FVU", "L0"], rows))
    fp32, bf16 = results["float32"], results["bfloat16"]
    print(
        f"- bf16 ÷ fp32 tokens/s: {bf16['tokens_per_s'] / fp32['tokens_per_s']:.2f}; "
        f"FVU change {bf16['fvu'] / fp32['fvu'] - 1:+.2%}"
    )
    print(
        f"- bf16 pick agrees with fp32 on {fp32['agreement_k']:.2%} of (row, latent) with k candidates, "
        f"{fp32['agreement_2k']:.2%} with 2k re-ranked in fp32"
    )
    record = {"machine_before": before, "machine_after": machine(), "args": vars(args), "results": results}
    write_text(Path(args.results), json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
