"""The SmolLM2 numbers in docs/probes-causal.md: `python -m rama.probes.causal_report --out docs/probes-causal`.

Trains logistic and difference-of-means cities probes at one layer (the first 200 cities, the probe's
split), steers along each while the model judges the held-out cities (`steer_truth_probe`), and ablates
the latents of each capability in turn with the layer-9 SAE (`capability_ablation`). Writes
`results.json`, `flips.png` and the tables as `tables.md`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rama.atomic import write_text
from rama.hooks.model import HookedModel
from rama.probes.capability import CAPABILITIES, CapabilityConfig, capability_ablation
from rama.probes.causal import JUDGE_TEMPLATE, CausalConfig, steer_truth_probe
from rama.probes.control import control_sentences
from rama.probes.datasets import load_dataset
from rama.probes.training import ProbeConfig, train_probe
from rama.sae import SAE


def causal_part(
    model: HookedModel, layer: int, kinds: list[str], config: CausalConfig, out: Path, limit: int
) -> dict[str, Any]:
    """Flip rates of each kind's cities probe at `layer`; a figure per kind."""
    cities = load_dataset("cities", limit=limit)
    control = control_sentences(20)  # only sets the alarm threshold, which steering does not use
    results: dict[str, Any] = {}
    for kind in kinds:
        trained = train_probe(
            model, cities, f"blocks.{layer}.hook_resid_post", control, ProbeConfig(kind=kind)
        )
        result = steer_truth_probe(
            model, trained, cities, config, on_row=lambda r: print(r.markdown(), flush=True)
        )
        result.figure(
            out
            / f"flips-{kind}-{config.positions}{'' if config.template == JUDGE_TEMPLATE else '-fewshot'}.png"
        )
        results[kind] = {"probe_test_auroc": trained.meta["test"]["auroc"], **result.to_dict(),
                         "table": result.markdown()}  # fmt: skip
        print(f"{kind} probe (test AUROC {trained.meta['test']['auroc']:.3f}), positions {config.positions}:")
        print(f"unsteered judgement accuracy {result.accuracy:.3f}, judged true {result.judged_true}/"
              f"{result.items}, perplexity {result.perplexity:.2f}, Δ {result.unit:.2f}, "
              f"typical norm {result.typical_norm:.1f}")  # fmt: skip
        print(result.markdown(), flush=True)
    return results


def capability_part(
    model: HookedModel, sae: SAE, targets: list[str], latents: int, rule: str, prompts: int, trials: int
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for target in targets:
        result = capability_ablation(
            model,
            sae,
            target,
            CapabilityConfig(latents=latents, rule=rule, random_trials=trials, prompts=prompts),
        )
        results[target] = {**result.to_dict(), "table": result.markdown()}
        print(f"target {target}, {latents} latents ({rule}): {result.latents}")
        print(result.markdown(), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    import rama

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--layer", type=int, default=12)
    parser.add_argument("--limit", type=int, default=200, help="cities (groups) of the probe's dataset")
    parser.add_argument("--prompts", type=int, default=60, help="prompts per capability")
    parser.add_argument("--random-trials", type=int, default=2)
    parser.add_argument("--kinds", nargs="*", default=["logistic", "diffmean"])
    parser.add_argument("--strengths", nargs="*", type=float, default=[1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
    parser.add_argument("--positions", default="all")
    parser.add_argument("--ppl-tokens", type=int, default=2048)
    parser.add_argument("--template", default=JUDGE_TEMPLATE, help="the judging prompt, with {statement}")
    parser.add_argument("--tag", default="", help="suffix of this run's key in results.json and figure")
    parser.add_argument("--random-directions", type=int, default=2)
    parser.add_argument("--sae", default="/work/artifacts/sae-l9-4608")
    parser.add_argument("--targets", nargs="*", default=list(CAPABILITIES))
    parser.add_argument("--latents", type=int, default=20)
    parser.add_argument("--rule", default="contrast")
    parser.add_argument("--skip-causal", action="store_true")
    parser.add_argument("--skip-capability", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = rama.load("smollm2-135m")
    results: dict[str, Any] = {}
    if (out / "results.json").is_file():
        results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    if not args.skip_causal:
        results[f"causal_layer{args.layer}_{args.positions}{args.tag}"] = causal_part(
            model,
            args.layer,
            args.kinds,
            CausalConfig(
                tuple(args.strengths),
                args.positions,
                random_directions=args.random_directions,
                ppl_tokens=args.ppl_tokens,
                template=args.template.replace("\\n", "\n"),
            ),
            out,
            args.limit,
        )
        write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    if not args.skip_capability:
        sae = SAE.load(args.sae)
        results.setdefault(f"capability_{args.rule}_{args.latents}", {}).update(
            capability_part(
                model, sae, args.targets, args.latents, args.rule, args.prompts, args.random_trials
            )
        )
        write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
