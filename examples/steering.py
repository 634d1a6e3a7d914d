"""Measured steering on SmolLM2-135M: three concepts, each steered with an SAE feature (found by a
search over the latents' activations on the built-in corpus) and with a contrastive vector; for each,
a strength sweep of concept rate (keyword scorer) and perplexity under the unsteered model; then a
Golden-Gate-style clamp.

    rama sae train --site blocks.12.hook_resid_post --width 4608 --k 32 --tokens 1000000 --out sae-l12
    python examples/steering.py sae-l12 [--out docs/steering]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import rama
from rama.atomic import write_text
from rama.data import PackConfig, token_batches
from rama.features import find_latents, latents_by_contrast, top_activations
from rama.interventions import add_vector, contrastive_vector, set_features
from rama.interventions.sweep import SweepPoint, SweepResult, keyword_scorer, plot_sweep, strength_sweep
from rama.sae import SAE

PROMPTS = [
    "I think that",
    "Yesterday I",
    "My favourite thing is",
    "The best way to spend a day is",
    "She told me that",
    "In the morning",
    "Let me tell you about",
    "My friend said",
    "The most important thing",
    "Last week we",
    "He looked out of the window and",
    "The story begins when",
]
NEUTRAL = [
    "The weather report said",
    "He opened the door and",
    "We talked about the plan",
    "The teacher explained the lesson",
    "I bought a new pair of shoes",
    "The meeting starts at nine",
    "They walked home after work",
    "The book was on the table",
]
CONCEPTS = {
    "sea": {
        "keywords": "sea,ocean,ship,sail,whale,wave,boat,shore,fish,water,captain",
        "examples": [
            "The ship sailed across the stormy sea",
            "The ocean waves crashed against the shore",
            "The sailors saw a whale in the deep water",
            "We took a boat out on the sea to fish",
        ],
    },
    "marriage": {
        "keywords": "marr,wedding,bride,groom,husband,wife",
        "examples": [
            "She agreed to marry him and the wedding was in June",
            "The bride and groom were married in the church",
            "He asked her to be his wife",
            "Their marriage was a happy one, husband and wife",
        ],
    },
    "war": {
        "keywords": "war,battle,sword,army,soldier,fight,enemy,kill,weapon,troops",
        "examples": [
            "The army marched into battle against the enemy",
            "The soldiers fought with swords and spears",
            "War broke out and the troops were sent to fight",
            "The king led his soldiers into the battle",
        ],
    },
}
SITE = "blocks.12.hook_resid_post"


def sweep_feature(model: rama.HookedModel, sae: SAE, latent: int, keywords: str) -> SweepResult:
    """Clamp the feature's activation (from position 1 on, generated tokens included); its decoder
    row has norm ≈ 9.8 against a residual norm of ≈ 135 at this site."""
    strengths = [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    return strength_sweep(
        model,
        lambda value: [set_features(model, sae, [latent], value, positions=slice(1, None))],
        PROMPTS,
        strengths,
        keyword_scorer(keywords.split(",")),
        f"keywords: {keywords}",
        SITE,
    )


def sweep_vector(model: rama.HookedModel, vector: torch.Tensor, keywords: str) -> SweepResult:
    strengths = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0]
    return strength_sweep(
        model,
        lambda value: [add_vector(model, SITE, vector, value, positions=slice(1, None))],
        PROMPTS,
        strengths,
        keyword_scorer(keywords.split(",")),
        f"keywords: {keywords}",
        SITE,
    )


def summary(result: SweepResult) -> dict[str, object]:
    best = result.best(2.0)
    return {
        "baseline": {
            "concept_rate": result.baseline().concept_rate,
            "perplexity": result.baseline().perplexity,
        },
        "best_under_2x_perplexity": None
        if best is None
        else {
            "strength": best.strength,
            "concept_rate": best.concept_rate,
            "perplexity": best.perplexity,
            "examples": best.examples,
        },
        "points": [
            {"strength": p.strength, "concept_rate": p.concept_rate, "perplexity": p.perplexity}
            for p in result.points
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sae", help="an SAE trained on blocks.12.hook_resid_post of SmolLM2-135M")
    parser.add_argument("--out", default="docs/steering")
    parser.add_argument("--search-batches", type=int, default=24)
    parser.add_argument("--replot", action="store_true", help="redraw the figures from OUT/steering.json")
    args = parser.parse_args()
    if args.replot:
        return replot(Path(args.out))
    model = rama.load("smollm2-135m")
    sae = SAE.load(args.sae)
    out = Path(args.out)
    batches = list(token_batches(model.tokenizer, batch_size=8, config=PackConfig(context_size=128, seed=1)))
    record: dict[str, object] = {}
    for name, concept in CONCEPTS.items():
        keywords = str(concept["keywords"])
        by_word = find_latents(sae, model, batches[: args.search_batches], keywords.split(","), top=3)
        by_contrast = latents_by_contrast(sae, model, list(concept["examples"]), NEUTRAL, top=3)
        latent = by_contrast[0][0]
        contexts = top_activations(sae, model, batches[: args.search_batches], [latent], k=3)[latent]
        print(
            f"{name}: token detectors {[(m.latent, round(m.share, 2)) for m in by_word]}; topic latent {latent}:"
        )
        print("   " + " | ".join(repr(a.context[-40:]) for a in contexts))
        vector = contrastive_vector(model, SITE, list(concept["examples"]), NEUTRAL, last_only=False)
        results = {
            f"SAE latent {latent} (clamp)": sweep_feature(model, sae, latent, keywords),
            "contrastive vector (add)": sweep_vector(model, vector, keywords),
        }
        plot_sweep(results, out / f"{name}.png", f"steering SmolLM2 towards '{name}' at {SITE}")
        record[name] = {
            "latent": latent,
            "latent_top_contexts": [a.context for a in contexts],
            "token_detector_latents": [m.__dict__ for m in by_word],
            **{method: summary(r) for method, r in results.items()},
        }
        for method, result in results.items():
            best = result.best(2.0)
            print(
                f"  {method}: "
                + ", ".join(f"{p.strength:g}→{p.concept_rate:.2f}/{p.perplexity:.1f}" for p in result.points)
            )
            if best is not None:
                print(
                    f"    best under 2× perplexity: strength {best.strength:g}, rate {best.concept_rate:.2f}: {best.examples[0]!r}"
                )
    record["golden_gate"] = golden_gate(model, sae, record)
    write_text(out / "steering.json", json.dumps(record, indent=1))


def replot(out: Path) -> None:
    record = json.loads((out / "steering.json").read_text())
    for name in CONCEPTS:
        results = {
            method: SweepResult([SweepPoint(**p) for p in data["points"]], "", SITE)
            for method, data in record[name].items()
            if isinstance(data, dict) and "points" in data
        }
        plot_sweep(results, out / f"{name}.png", f"steering SmolLM2 towards '{name}' at {SITE}")


def golden_gate(model: rama.HookedModel, sae: SAE, record: dict[str, object]) -> dict[str, str]:
    """Golden-Gate style: the 'sea' direction added at the strength the sweep found best, while the
    model talks about itself (the contrastive vector: it is the method that reached the concept)."""
    vector = contrastive_vector(model, SITE, list(CONCEPTS["sea"]["examples"]), NEUTRAL, last_only=False)
    found = record["sea"]
    assert isinstance(found, dict)
    best = found["contrastive vector (add)"]["best_under_2x_perplexity"]
    hook = add_vector(model, SITE, vector, best["strength"] if best else 1.5, positions=slice(1, None))
    texts = {}
    for prompt in (
        "Let me describe myself. I am",
        "My favourite place in the world is",
        "What I dream about is",
    ):
        plain = model.generate(prompt, max_new_tokens=25)
        steered = model.generate(prompt, max_new_tokens=25, fwd_hooks=[hook])
        print(f"\n{prompt!r}\n  unsteered: {plain[len(prompt) :]!r}\n  sea clamp: {steered[len(prompt) :]!r}")
        texts[prompt] = str(steered)
    return texts


if __name__ == "__main__":
    main()
