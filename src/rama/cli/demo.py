"""`rama demo`: the main job on the embedded default model, end to end, offline — as plug-in steps.

A step is a `DemoStep`: a name (for `--steps`), a title, a function that takes the shared
`DemoContext` (model, corpus batches, output folder, options, earlier steps' numbers) and returns
its numbers for `summary.json`, and optionally a function that draws its panel of `overview.png`
from those numbers. `STEPS` lists them in the order they run; adding a step to the demo is one record
there. Each step's wall time is written to `summary.json` (`seconds`, and `cpu_seconds` over all
threads, which a busy machine does not inflate) and the total is printed against `BUDGET_S`: the whole demo stays under five minutes on a 2-core CPU once the model and
corpus are cached.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rama.cli.options import add_options, from_args, option
from rama.errors import ConfigError

PROMPT = "The capital of France is Paris. The capital of Germany is"
BUDGET_S = 300.0  # the whole demo on a 2-core CPU, model and corpus cached

Numbers = dict[str, Any]


@dataclass(frozen=True)
class DemoConfig:
    model: str = option("smollm2-135m", "built-in name, local HF folder or hub id")
    corpus: str | None = option(None, "corpus file/folder (default: the built-in English corpus)")
    out: str = option("rama-demo", "folder for overview.png and summary.json")
    steps: str = option("", "comma-separated steps to run (default: all; see the list below)")
    batches: int = option(2, "corpus batches to stream through the model")
    batch_size: int = option(8, "contexts per batch")
    context_size: int = option(128, "tokens per context")
    sae_tokens: int = option(100_000, "tokens to train the demo's TopK SAE on (0: skip the SAE)")
    sae_site: str = option("blocks.6.hook_resid_post", "the site the demo's SAE reads")
    sae_eval_tokens: int = option(
        4096, "held-out tokens for the demo SAE's metrics (CE loss needs full forward passes)"
    )
    features_tokens: int = option(32_768, "tokens the demo's feature store is built over")
    features_compared: int = option(
        150, "latents and neurons (each) whose context coherence the demo measures with MiniLM"
    )


class DemoContext:
    """What every step shares: the model, the options, the output folder, the corpus batches (built on
    first use, so steps that need no corpus do not wait for it) and earlier steps' numbers."""

    def __init__(self, model: Any, config: DemoConfig, out: Path) -> None:
        self.model = model
        self.config = config
        self.out = out
        self.results: dict[str, Numbers] = {}

    @cached_property
    def batches(self) -> list[torch.Tensor]:
        """Corpus token batches, each [batch, context_size]."""
        from rama.data import PackConfig, token_batches

        config = self.config
        return list(
            token_batches(
                self.model.tokenizer,
                config.corpus,
                batch_size=config.batch_size,
                config=PackConfig(context_size=config.context_size),
                max_tokens=config.batches * config.batch_size * config.context_size,
            )
        )


@dataclass(frozen=True)
class DemoStep:
    """One plug-in step of the demo; `draw(axis, numbers)` draws its panel of the overview figure."""

    name: str
    title: str
    run: Callable[[DemoContext], Numbers]
    draw: Callable[[Any, Numbers], None] | None = field(default=None)


def complete(context: DemoContext) -> Numbers:
    completion = context.model.generate(PROMPT, max_new_tokens=8)
    print(f"completion: {completion!r}")
    return {"prompt": PROMPT, "completion": completion}


def residual_norms(context: DemoContext) -> Numbers:
    """Mean `resid_post` norm per layer, at position 0 and at every later position."""
    model, batches = context.model, context.batches
    first = torch.zeros(model.cfg.n_layers)
    rest = torch.zeros(model.cfg.n_layers)
    for tokens in tqdm(batches, desc="residual stream", unit="batch"):
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, "blocks.*.hook_resid_post")
        norms = cache.stack("hook_resid_post").norm(dim=-1)  # [layer, batch, pos]
        first += norms[:, :, 0].mean(1) / len(batches)
        rest += norms[:, :, 1:].mean((1, 2)) / len(batches)
    return {
        "tokens": sum(b.numel() for b in batches),
        "position_0": first.tolist(),
        "other_positions": rest.tolist(),
    }


def draw_norms(axis: Any, numbers: Numbers) -> None:
    layers = range(len(numbers["position_0"]))
    axis.plot(layers, numbers["position_0"], marker="o", label="position 0")
    axis.plot(layers, numbers["other_positions"], marker="o", label="positions 1…")
    axis.set(yscale="log", xlabel="layer", ylabel="mean ‖resid_post‖ (log scale)")
    axis.legend()


def head_numbers(scores: torch.Tensor, k: int = 5) -> Numbers:
    """The top `k` heads ("layer.head": score) and every head's score, [layer][head]."""
    values, flat = scores.flatten().topk(k)
    n_heads = scores.shape[1]
    top = {
        f"{i // n_heads}.{i % n_heads}": round(v, 3)
        for v, i in zip(values.tolist(), flat.tolist(), strict=True)
    }
    return {"top_heads": top, "scores": [[round(s, 4) for s in row] for row in scores.tolist()]}


def previous_token_heads(context: DemoContext) -> Numbers:
    from rama.circuits import previous_token_scores

    batches = tqdm(context.batches, desc="previous-token heads", unit="batch")
    numbers = head_numbers(previous_token_scores(context.model, batches))
    print(f"previous-token heads (layer.head: score): {numbers['top_heads']}")
    return numbers


def induction_heads(context: DemoContext) -> Numbers:
    from rama.circuits import induction_scores

    numbers = head_numbers(induction_scores(context.model))
    print(f"induction heads (layer.head: score): {numbers['top_heads']}")
    return numbers


def ioi_heads(context: DemoContext) -> Numbers:
    """Indirect object identification: does the model name the right person, and which heads write
    the answer (direct logit attribution at the last position; `rama circuits ioi` does the path patching)."""
    from rama.circuits.ioi_search import ioi_summary

    numbers = ioi_summary(context.model, n=16)
    movers = ", ".join(f"{layer}.{head} {value:+.2f}" for layer, head, value in numbers["name_movers"])
    print(
        f"IOI: logit difference {numbers['logit_difference']:.2f} (IO − S) on {numbers['prompts']} prompts, "
        f"IO above S in {numbers['accuracy']:.0%}; strongest name movers (layer.head: direct effect): {movers}"
    )
    return numbers


def draw_heads(axis: Any, numbers: Numbers) -> None:
    scores = torch.tensor(numbers["scores"])  # [layer, head]
    image = axis.imshow(scores.T.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1, origin="lower")
    axis.set(xlabel="layer", ylabel="head")
    axis.figure.colorbar(image, ax=axis, label="mean attention")


def demo_sae(context: DemoContext) -> Numbers:
    """Train a small TopK SAE (streaming), evaluate it, and show what a few of its latents respond to."""
    import shutil

    from safetensors.torch import load_file

    from rama.activations import HarvestConfig
    from rama.features import top_activations
    from rama.sae import TrainConfig, train

    config, model = context.config, context.model
    if config.sae_tokens <= 0:
        return {"skipped": "--sae-tokens 0"}
    folder = context.out / "sae"
    shutil.rmtree(folder, ignore_errors=True)  # the demo's own output from an earlier run
    train_config = TrainConfig.create(
        architecture="topk", d_sae=2048, k=16, total_tokens=config.sae_tokens, batch_size=2048
    )
    harvest = HarvestConfig(
        tokens=config.sae_tokens + config.sae_eval_tokens,
        batch_size=config.batch_size,
        context_size=config.context_size,
    )
    sae, metrics = train(
        model, config.sae_site, folder, config=train_config, harvest_config=harvest,
        eval_tokens=config.sae_eval_tokens, stream=True,
    )  # fmt: skip
    density = load_file(str(folder / "sparsity.safetensors"))["sparsity"]
    band = ((density > -3) & (density < -1.5)).nonzero().flatten()
    chosen = band[torch.randperm(band.numel(), generator=torch.Generator().manual_seed(0))[:6]].tolist()
    examples = top_activations(sae, model, context.batches, chosen, k=4)
    print(
        f"SAE on {config.sae_site}: FVU {metrics['fvu']:.3f}, L0 {metrics['l0']:.1f}, "
        f"CE loss recovered {metrics['ce_loss_recovered']:.3f}, dead {metrics['dead_fraction']:.1%}"
    )
    for latent, found in examples.items():
        print(f"  latent {latent}: " + " | ".join(repr(a.context[-40:]) for a in found[:3]))
    keys = ("fvu", "l0", "ce_loss_recovered", "dead_fraction", "kl_spliced", "tokens_per_s")
    return {
        "site": config.sae_site,
        "metrics": {key: metrics[key] for key in keys},
        "log10_density": [round(d, 3) for d in density.clamp_min(-10).tolist()],
        "top_activations": {str(latent): [a.context for a in found] for latent, found in examples.items()},
    }


def draw_density(axis: Any, numbers: Numbers) -> None:
    if "log10_density" not in numbers:
        axis.set_axis_off()
        return
    density = torch.tensor(numbers["log10_density"]).clamp_min(-8)
    axis.hist(density.numpy(), bins=40, color="tab:purple")
    metrics = numbers["metrics"]
    axis.set(xlabel="log10 firing rate per token (−8: never)", ylabel="latents")
    axis.text(
        0.02, 0.95, f"FVU {metrics['fvu']:.3f}\nL0 {metrics['l0']:.1f}\nCE rec. {metrics['ce_loss_recovered']:.3f}",
        transform=axis.transAxes, va="top", fontsize=9,
    )  # fmt: skip


def demo_features(context: DemoContext) -> Numbers:
    """A feature store for the demo's SAE (latents and the block's MLP neurons), the command that serves
    it, and features against neurons: how concentrated and how coherent their top examples are."""
    from rama.features import BuildConfig, build
    from rama.features.monosemanticity import CompareConfig, compare_units, comparison_table
    from rama.features.store import FeatureStore

    config = context.config
    if context.results.get("sae", {}).get("site") is None:
        return {"skipped": "needs the sae step's SAE"}
    out = context.out / "features.db"
    build(context.out / "sae", context.model, corpus=config.corpus, out=out, replace=True,
          config=BuildConfig(tokens=config.features_tokens, batch_size=config.batch_size,
                             context_size=config.context_size))  # fmt: skip
    compare = CompareConfig(top_k=10, coherence_units=config.features_compared, baseline_sets=500)
    with FeatureStore(out) as store:
        comparison = compare_units(store, config=compare)
        meta = store.meta
    print(f"feature store {out}: {meta['d_sae']} latents and {meta['n_neurons']} neurons over "
          f"{meta['tokens']} tokens")  # fmt: skip
    print(comparison_table(comparison))
    print(f"browse it: rama serve {out}")
    summary = comparison.summary()
    return {
        "store": str(out),
        "serve": f"rama serve {out}",
        "summary": summary,
        "concentration": {kind: [u.concentration for u in comparison.of(kind)] for kind in summary},
    }


def draw_concentration(axis: Any, numbers: Numbers) -> None:
    if "concentration" not in numbers:
        axis.set_axis_off()
        return
    colours = {"latent": "tab:blue", "neuron": "tab:orange"}
    bins = [(i - 0.5) / 10 for i in range(1, 12)]  # one bin per possible share 1/10 … 1 of the top 10
    for kind, values in numbers["concentration"].items():
        median = numbers["summary"][kind].get("concentration_median", float("nan"))
        axis.hist(values, bins=bins, weights=[1 / len(values)] * len(values), alpha=0.5, color=colours[kind],
                  label=f"{kind}s: median {median:.2f}")  # fmt: skip
    axis.set(xlabel="share of a unit's top 10 examples on its most frequent token", ylabel="share of units")
    axis.legend(fontsize=9, frameon=False)


STEPS: tuple[DemoStep, ...] = (
    DemoStep("completion", "Greedy completion", complete),
    DemoStep("residual", "Residual stream norm by layer", residual_norms, draw_norms),
    DemoStep("previous-token", "Previous-token score per head", previous_token_heads, draw_heads),
    DemoStep("induction", "Induction score per head", induction_heads, draw_heads),
    DemoStep("ioi", "Indirect object identification", ioi_heads),
    DemoStep("sae", "TopK SAE: latent firing rates", demo_sae, draw_density),
    DemoStep("features", "Features vs neurons: token concentration", demo_features, draw_concentration),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the main job on the built-in model and corpus (offline)",
        epilog="steps: "
        + ", ".join(step.name for step in STEPS)
        + "\nexample: rama demo --steps completion,induction --out /tmp/rama-demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(parser, DemoConfig)
    parser.set_defaults(handler=lambda ns: run_demo(from_args(DemoConfig, ns)))


def choose_steps(names: str, steps: Sequence[DemoStep] = STEPS) -> list[DemoStep]:
    """The steps named in `names` (comma-separated), in the demo's order; "" means all."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {step.name: step for step in steps}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ConfigError(f"unknown demo step(s) {', '.join(unknown)}; the steps are: {', '.join(known)}")
    return [step for step in steps if not wanted or step.name in wanted]


def run_demo(config: DemoConfig, steps: Sequence[DemoStep] = STEPS) -> int:
    from rama import load
    from rama.atomic import write_text

    chosen = choose_steps(config.steps, steps)
    out = Path(config.out)
    started = time.perf_counter()
    model = load(config.model)
    print(f"# {model!r}")
    context = DemoContext(model, config, out)
    summary: dict[str, Any] = {"config": asdict(config), "model": model.cfg.to_dict(), "steps": {}}
    for step in chosen:
        print(f"== {step.title} ({step.name})")
        begun, cpu = time.perf_counter(), time.process_time()
        numbers = step.run(context)
        context.results[step.name] = numbers
        summary["steps"][step.name] = {
            "title": step.title,
            "seconds": round(time.perf_counter() - begun, 2),
            "cpu_seconds": round(time.process_time() - cpu, 2),  # all threads: on a busy machine, the work
        }
        summary[step.name] = numbers
        write_text(out / "summary.json", json.dumps(summary, indent=2))  # each step's numbers, as they come
    summary["total_seconds"] = round(time.perf_counter() - started, 2)
    summary["total_cpu_seconds"] = round(time.process_time(), 2)
    write_text(out / "summary.json", json.dumps(summary, indent=2))
    drawn = [step for step in chosen if step.draw is not None]
    if drawn:
        plot_overview(out / "overview.png", drawn, context.results, model.cfg.name)
    timings = ", ".join(f"{name} {entry['seconds']:.0f} s" for name, entry in summary["steps"].items())
    print(f"time: {summary['total_seconds']:.0f} s in all (budget {BUDGET_S:.0f} s): {timings}")
    print(f"wrote {out / 'summary.json'}" + (f" and {out / 'overview.png'}" if drawn else ""))
    return 0


def plot_overview(path: Path, steps: Sequence[DemoStep], results: dict[str, Numbers], name: str) -> None:
    """One panel per step that draws one, side by side."""
    from rama.plotting import pyplot, save_figure

    figure, axes = pyplot().subplots(1, len(steps), figsize=(5.3 * len(steps), 4.8), squeeze=False)
    for axis, step in zip(axes[0], steps, strict=True):
        assert step.draw is not None
        step.draw(axis, results[step.name])
        axis.set_title(step.title)
    figure.suptitle(f"rama demo — {name}")
    figure.tight_layout()
    save_figure(figure, path)
