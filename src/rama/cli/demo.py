"""`rama demo`: the main job on the embedded default model, end to end, offline.

Loads SmolLM2-135M and the built-in corpus, completes a prompt, streams corpus batches through the
model with hooks (residual-stream norms per layer, previous-token heads), finds induction heads on
repeated random tokens, and writes a figure and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rama.cli.options import add_options, from_args, option

PROMPT = "The capital of France is Paris. The capital of Germany is"


@dataclass(frozen=True)
class DemoConfig:
    model: str = option("smollm2-135m", "built-in name, local HF folder or hub id")
    corpus: str | None = option(None, "corpus file/folder (default: the built-in English corpus)")
    out: str = option("rama-demo", "folder for overview.png and summary.json")
    batches: int = option(4, "corpus batches to stream through the model")
    batch_size: int = option(8, "contexts per batch")
    context_size: int = option(128, "tokens per context")
    sae_tokens: int = option(100_000, "tokens to train the demo's TopK SAE on (0: skip the SAE)")
    sae_site: str = option("blocks.6.hook_resid_post", "the site the demo's SAE reads")
    sae_eval_tokens: int = option(8192, "held-out tokens for the demo SAE's metrics")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the main job on the built-in model and corpus (offline)",
        epilog="example: rama demo --batches 2 --out /tmp/rama-demo",
    )
    add_options(parser, DemoConfig)
    parser.set_defaults(handler=lambda ns: run_demo(from_args(DemoConfig, ns)))


def residual_norms(model: Any, batches: list[torch.Tensor]) -> dict[str, list[float]]:
    """Mean `resid_post` norm per layer, at position 0 and at every later position."""
    first = torch.zeros(model.cfg.n_layers)
    rest = torch.zeros(model.cfg.n_layers)
    for tokens in tqdm(batches, desc="residual stream", unit="batch"):
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, "blocks.*.hook_resid_post")
        norms = cache.stack("hook_resid_post").norm(dim=-1)  # [layer, batch, pos]
        first += norms[:, :, 0].mean(1) / len(batches)
        rest += norms[:, :, 1:].mean((1, 2)) / len(batches)
    return {"position_0": first.tolist(), "other_positions": rest.tolist()}


def run_demo(config: DemoConfig) -> int:
    from rama import load
    from rama.circuits import induction_scores, previous_token_scores
    from rama.data import PackConfig, token_batches

    model = load(config.model)
    print(f"# {model!r}")
    completion = model.generate(PROMPT, max_new_tokens=8)
    print(f"completion: {completion!r}")
    pack = PackConfig(context_size=config.context_size)
    batches = list(
        token_batches(
            model.tokenizer,
            config.corpus,
            batch_size=config.batch_size,
            config=pack,
            max_tokens=config.batches * config.batch_size * config.context_size,
        )
    )
    norms = residual_norms(model, batches)
    previous = previous_token_scores(model, tqdm(batches, desc="previous-token heads", unit="batch"))
    induction = induction_scores(model)
    summary = {
        "config": asdict(config),
        "model": model.cfg.to_dict(),
        "completion": completion,
        "tokens": sum(b.numel() for b in batches),
        "residual_norms": norms,
        "top_previous_token_heads": top_heads(previous),
        "top_induction_heads": top_heads(induction),
    }
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "summary.json", json.dumps(summary, indent=2))
    plot_overview(out / "overview.png", norms, previous, induction, model.cfg.name)
    if config.sae_tokens > 0:
        summary["sae"] = demo_sae(model, config, out, batches)
        write_atomic(out / "summary.json", json.dumps(summary, indent=2))
    print(f"previous-token heads (layer.head: score): {summary['top_previous_token_heads']}")
    print(f"induction heads (layer.head: score): {summary['top_induction_heads']}")
    print(f"wrote {out / 'summary.json'} and {out / 'overview.png'}")
    return 0


def demo_sae(model: Any, config: DemoConfig, out: Path, batches: list[torch.Tensor]) -> dict[str, Any]:
    """Train a small TopK SAE (streaming), evaluate it, and show what a few of its latents respond to."""
    import shutil

    from safetensors.torch import load_file

    from rama.activations import HarvestConfig
    from rama.features import top_activations
    from rama.sae import TrainConfig, train

    folder = out / "sae"
    shutil.rmtree(folder, ignore_errors=True)  # the demo's own output from an earlier run
    train_config = TrainConfig(
        architecture="topk", d_sae=2048, k=16, total_tokens=config.sae_tokens, batch_size=2048
    )
    harvest = HarvestConfig(
        tokens=config.sae_tokens + config.sae_eval_tokens,
        batch_size=config.batch_size,
        context_size=config.context_size,
    )
    sae, metrics = train(
        model,
        config.sae_site,
        folder,
        config=train_config,
        harvest_config=harvest,
        eval_tokens=config.sae_eval_tokens,
        stream=True,
    )
    density = load_file(str(folder / "sparsity.safetensors"))["sparsity"]
    band = ((density > -3) & (density < -1.5)).nonzero().flatten()
    chosen = band[torch.randperm(band.numel(), generator=torch.Generator().manual_seed(0))[:6]].tolist()
    examples = top_activations(sae, model, batches, chosen, k=4)
    print(
        f"SAE on {config.sae_site}: FVU {metrics['fvu']:.3f}, L0 {metrics['l0']:.1f}, "
        f"CE loss recovered {metrics['ce_loss_recovered']:.3f}, dead {metrics['dead_fraction']:.1%}"
    )
    for latent, found in examples.items():
        print(f"  latent {latent}: " + " | ".join(repr(a.context[-40:]) for a in found[:3]))
    keys = ("fvu", "l0", "ce_loss_recovered", "dead_fraction", "kl_spliced", "tokens_per_s")
    return {
        "metrics": {key: metrics[key] for key in keys},
        "top_activations": {str(latent): [a.context for a in found] for latent, found in examples.items()},
    }


def top_heads(scores: torch.Tensor, k: int = 5) -> dict[str, float]:
    values, flat = scores.flatten().topk(k)
    n_heads = scores.shape[1]
    return {
        f"{i // n_heads}.{i % n_heads}": round(v, 3)
        for v, i in zip(values.tolist(), flat.tolist(), strict=True)
    }


def write_atomic(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)


def plot_overview(
    path: Path, norms: dict[str, list[float]], previous: torch.Tensor, induction: torch.Tensor, name: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    layers = range(len(norms["position_0"]))
    axes[0].plot(layers, norms["position_0"], marker="o", label="position 0")
    axes[0].plot(layers, norms["other_positions"], marker="o", label="positions 1…")
    axes[0].set(
        yscale="log",
        xlabel="layer",
        ylabel="mean ‖resid_post‖ (log scale)",
        title="Residual stream norm by layer",
    )
    axes[0].legend()
    for axis, scores, title in (
        (axes[1], previous, "Previous-token score"),
        (axes[2], induction, "Induction score"),
    ):
        image = axis.imshow(scores.T.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1, origin="lower")
        axis.set(xlabel="layer", ylabel="head", title=f"{title} per head")
        figure.colorbar(image, ax=axis, label="mean attention")
    figure.suptitle(f"rama demo — {name}")
    figure.tight_layout()
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(handle)
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    os.replace(temporary, path)
