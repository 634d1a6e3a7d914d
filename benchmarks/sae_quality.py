"""SAE quality on the real model: SmolLM2-135M, `blocks.9.hook_resid_post`, the built-in corpus.

    python benchmarks/sae_quality.py [--tokens 2000000] [--arch topk --width 4608 --k 32] [--out DIR]

Trains through `rama.sae.train` (harvest with early-stopped forward, then fit), evaluates on held-out
text, prints the metrics and writes DIR/metrics.json plus a figure of training FVU against tokens.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import rama
from rama.activations import HarvestConfig
from rama.sae import TrainConfig, train


def plot_curve(folder: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = folder / "metrics.jsonl"
    log = log if log.exists() else folder / "checkpoint" / "metrics.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    config = json.loads((folder / "train_config.json").read_text())
    tokens = [r["step"] * config["batch_size"] / 1e6 for r in records]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(tokens, [r["fvu"] for r in records])
    axis.set(xlabel="training tokens (millions)", ylabel="FVU (training batch)", title=title, ylim=(0, 1))
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(folder / "fvu_curve.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=2_000_000)
    parser.add_argument("--arch", default="topk")
    parser.add_argument("--width", type=int, default=4608)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--l1", type=float, default=0.0)
    parser.add_argument("--l0", type=float, default=0.0)
    parser.add_argument("--site", default="blocks.9.hook_resid_post")
    parser.add_argument("--eval-tokens", type=int, default=32_768)
    parser.add_argument("--out", default="benchmarks/results/sae-quality")
    args = parser.parse_args()
    model = rama.load("smollm2-135m")
    config = TrainConfig.create(
        architecture=args.arch,
        d_sae=args.width,
        k=args.k,
        l1_coefficient=args.l1,
        l0_coefficient=args.l0,
        total_tokens=args.tokens,
        batch_size=4096,
    )
    harvest_config = HarvestConfig(tokens=args.tokens, dtype="float16")
    out = Path(args.out)
    _, metrics = train(
        model,
        args.site,
        out,
        config=config,
        harvest_config=harvest_config,
        eval_tokens=args.eval_tokens,
        stream=False,
    )
    plot_curve(out, f"{args.arch} SAE, {args.width} latents, {args.site}")
    metrics.pop("log10_density_histogram")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
