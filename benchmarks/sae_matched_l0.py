"""Every SAE architecture at matched L0 on the real model: SmolLM2-135M, `blocks.9.hook_resid_post`.

    python benchmarks/sae_matched_l0.py [--tokens 1000000] [--l0 32] [--out DIR]

One harvest feeds all five (`rama.sae.train_many`). TopK and BatchTopK get k = L0; the penalty
architectures (ReLU-L1 "standard", JumpReLU, gated) get `target_l0`, which steers their sparsity
coefficient to that L0 while training. Each is evaluated on held-out text (FVU, CE loss recovered,
KL …); writes DIR/matched_l0.json, a markdown table on stdout and DIR/fvu_by_architecture.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import rama
from rama.activations import HarvestConfig
from rama.sae import TrainConfig, train_many
from rama.sae.runner import Job

# Starting sparsity coefficients; the controller moves them (measured starting points on this site).
START_COEFFICIENT = {"standard": 5.0, "jumprelu": 10.0, "gated": 4.0}
COLUMNS = ["fvu", "l0", "dead_fraction", "ce_loss_recovered", "kl_spliced", "shrinkage", "train_seconds"]


def configs(tokens: int, width: int, l0: int, rate: float) -> dict[str, TrainConfig]:
    base = {
        "d_sae": width,
        "total_tokens": tokens,
        "batch_size": 4096,
        "progress": True,
        "target_l0_rate": rate,
    }
    out = {arch: TrainConfig.create(architecture=arch, k=l0, **base) for arch in ("topk", "batchtopk")}
    out["standard"] = TrainConfig.create(
        "standard", k=None, l1_coefficient=START_COEFFICIENT["standard"], target_l0=l0, **base
    )
    out["jumprelu"] = TrainConfig.create(
        "jumprelu", k=None, l0_coefficient=START_COEFFICIENT["jumprelu"], target_l0=l0, **base
    )
    out["gated"] = TrainConfig.create(
        "gated", k=None, l1_coefficient=START_COEFFICIENT["gated"], target_l0=l0, **base
    )
    return out  # fmt: skip


def plot(folder: Path, archs: list[str], batch_size: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (fvu_axis, l0_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for arch in archs:
        records = [json.loads(line) for line in (folder / arch / "metrics.jsonl").read_text().splitlines()]
        tokens = [r["step"] * batch_size / 1e6 for r in records]
        fvu_axis.plot(tokens, [r["fvu"] for r in records], label=arch)
        l0_axis.plot(tokens, [r["l0"] for r in records], label=arch)
    fvu_axis.set(xlabel="training tokens (millions)", ylabel="FVU (training batch)", ylim=(0, 1))
    l0_axis.set(xlabel="training tokens (millions)", ylabel="L0 (training batch)", yscale="log")
    for axis in (fvu_axis, l0_axis):
        axis.grid(alpha=0.3)
    l0_axis.legend()  # one legend: the colours are shared
    figure.suptitle("SmolLM2-135M blocks.9.hook_resid_post, 4,608 latents, target L0 32")
    figure.tight_layout()
    figure.savefig(folder / "fvu_by_architecture.png", dpi=110)


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| architecture | " + " | ".join(COLUMNS) + " | final coefficient |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    for arch, row in results.items():
        cells = [f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS]
        lines.append(f"| {arch} | " + " | ".join(cells) + f" | {row.get('final_coefficient', '')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--width", type=int, default=4608)
    parser.add_argument("--l0", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0.02, help="target_l0_rate (the default)")
    parser.add_argument("--archs", default="topk,batchtopk,standard,jumprelu,gated")
    parser.add_argument("--eval-tokens", type=int, default=32_768)
    parser.add_argument("--out", default="benchmarks/results/sae-matched-l0")
    args = parser.parse_args()
    model = rama.load("smollm2-135m")
    site, out = "blocks.9.hook_resid_post", Path(args.out)
    chosen = {
        arch: config
        for arch, config in configs(args.tokens, args.width, args.l0, args.rate).items()
        if arch in args.archs.split(",")
    }
    jobs = [Job(site, out / arch, config) for arch, config in chosen.items()]
    trained = train_many(model, jobs, harvest_config=HarvestConfig(tokens=args.tokens, dtype="float16"), eval_tokens=args.eval_tokens, stream=False)  # fmt: skip
    results = {}
    for arch, (sae, metrics) in zip(chosen, trained, strict=True):
        metrics.pop("log10_density_histogram", None)
        coefficient = sae.training_coefficient
        final = round(getattr(sae.cfg, coefficient), 4) if coefficient else None
        results[arch] = {**metrics, "final_coefficient": final}
    (out / "matched_l0.json").write_text(json.dumps(results, indent=2))
    plot(out, list(chosen), 4096)
    print(table(results))


if __name__ == "__main__":
    main()
