"""Measured steering on SmolLM2-135M: concepts steered with an SAE feature and with a contrastive
vector, each over a sweep of strengths, scored by concept rate (keyword scorer) and perplexity under
the unsteered model; then a Golden-Gate-style clamp.

The SAE latent for a concept is found in three steps, none of which sees the evaluation prompts:
candidates are the 128 latents most active on short concept texts against neutral ones
(`latents_by_contrast`); the five among them whose decoder rows most raise the probability of the
concept's words when added (`latents_by_effect`, on the selection prompts) are each steered at norms
40, 50 and 60 on the selection prompts, and the one with the highest concept rate under 2× perplexity
is chosen (`rank_by_steering`). Strengths are the norm of what is added to the residual stream, so
both methods share one axis (the residual norm at this site is ≈ 150 from position 2 on). 32 evaluation prompts; the keyword lists are fixed in CONCEPTS.

    rama sae train --site blocks.9.hook_resid_post --width 4608 --k 32 --tokens 1500000 --out sae-l9
    python examples/steering.py sae-l9 [--out docs/steering] [--concepts sea,music]

A run of some concepts rewrites their entries in OUT/steering.json and keeps the others' (each entry names
the SAE it used; each sweep point carries its strength).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

import rama
from rama.atomic import write_text
from rama.data import PackConfig, token_batches
from rama.features import latents_by_contrast, latents_by_effect, top_activations
from rama.interventions import add_vector, contrastive_vector, set_features
from rama.interventions.steering import Hook
from rama.interventions.sweep import (
    SweepPoint,
    SweepResult,
    keyword_scorer,
    plot_sweep,
    rank_by_steering,
    strength_sweep,
)
from rama.sae import SAE

PROMPTS = [  # evaluation: the sweeps' concept rates and perplexities
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
    "Everyone knows that",
    "When I was young",
    "The problem with this is",
    "After dinner they",
    "The first thing you notice is",
    "On the way home",
    "It all started with",
    "The reason I came here is",
    "We spent the whole afternoon",
    "There was once a man who",
    "What surprised me most was",
    "At the end of the road",
    "My grandmother used to say",
    "The letter said that",
    "Nobody expected that",
    "I have always wanted to",
    "The new neighbours",
    "On Sunday afternoon",
    "The children were",
    "He finally decided to",
]
SELECTION = [  # only for choosing the SAE latent, so the evaluation prompts play no part in it
    "The old man said",
    "It was a long time ago and",
    "We went out and",
    "Then she wrote",
    "Here is a short story:",
    "The people of the town",
    "I remember the day when",
    "The best part of the trip was",
    "Our plan for tomorrow is",
    "He could not stop thinking about",
    "This is a picture of",
    "The news this morning",
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
CONCEPTS: dict[str, dict[str, str | list[str]]] = {
    "sea": {
        "keywords": "sea,seas,ocean*,ship*,sail*,whale*,wave*,boat*,shore*,fish*,water*,captain*,tide*,beach*,coast*,harbo*,voyage*",
        "examples": [
            "The ship sailed across the stormy sea",
            "The ocean waves crashed against the shore",
            "The sailors saw a whale in the deep water",
            "We took a boat out on the sea to fish",
            "The captain steered the ship into the harbour",
            "The tide came in over the sandy beach",
            "Salt spray blew off the waves of the ocean",
            "The fishermen hauled their nets onto the boat",
        ],
    },
    "war": {
        "keywords": "war,wars,battle*,sword*,army,armies,soldier*,fight*,fought,enemy,enemies,kill*,weapon*,troop*,attack*,conquer*",
        "examples": [
            "The army marched into battle against the enemy",
            "The soldiers fought with swords and spears",
            "War broke out and the troops were sent to fight",
            "The king led his soldiers into the battle",
            "The enemy attacked the city at dawn",
            "Thousands were killed in the war",
            "The troops raised their weapons and charged",
            "They fought to conquer the land of their enemies",
        ],
    },
    "food": {
        "keywords": "food*,eat,eats,eating,eaten,ate,bread*,meat*,cook*,dinner*,breakfast*,supper*,feast*,fruit*,meal*,hungry,delicious,taste*,tasty,kitchen*,bak*",
        "examples": [
            "She baked fresh bread and cooked a delicious meal",
            "We ate a feast of roast meat, fruit and cheese",
            "The kitchen smelled of soup and baking bread",
            "He was hungry and ate his dinner quickly",
            "They cooked breakfast: eggs, bacon and toast",
            "The cake tasted of sugar, butter and cream",
            "For supper there was fish, potatoes and pie",
            "She tasted the sauce and added more salt",
        ],
    },
    "marriage": {
        "keywords": "marr*,wedding*,bride*,groom*,husband*,wife,wives",
        "examples": [
            "She agreed to marry him and the wedding was in June",
            "The bride and groom were married in the church",
            "He asked her to be his wife",
            "Their marriage was a happy one, husband and wife",
            "The wedding guests cheered for the bride",
            "He proposed and she said yes; they would marry",
            "After the wedding, the husband and wife went home",
            "They celebrated ten years of marriage",
        ],
    },
    "religion": {
        "keywords": "god,gods,lord,pray*,church*,heaven*,holy,faith*,jesus,christ*,bible*,angel*,worship*,divine,sinner*,sinful,soul*",
        "examples": [
            "They prayed to God in the old stone church",
            "The priest read from the Holy Bible",
            "Praise the Lord, for his mercy endures forever",
            "She had faith that God would answer her prayers",
            "The angels sang in heaven before the throne of God",
            "Jesus Christ taught his disciples to pray",
            "The congregation gathered to worship on Sunday",
            "He confessed his sins and asked God for forgiveness",
        ],
    },
    "music": {
        "keywords": "music*,song*,singer*,singing,sang,melod*,piano*,guitar*,violin*,concert*,tune*,rhythm*,drum*,orchestra*,album*",
        "examples": [
            "She played a beautiful melody on the piano",
            "The band played their new song at the concert",
            "He picked up his guitar and began to sing",
            "The orchestra tuned their violins before the symphony",
            "The choir sang a hymn in perfect harmony",
            "The drummer kept the rhythm while the crowd danced",
            "They listened to music all night long",
            "The musician released a new album of songs",
        ],
    },
    "horses": {
        "keywords": "horse*,ride,rides,riding,rode,rider*,saddle*,gallop*,stable*,mare,mares,stallion*,pony,ponies,hoof,hooves,bridle*,reins",
        "examples": [
            "He saddled his horse and rode off at a gallop",
            "The mare and her foal grazed in the field",
            "The rider pulled on the reins and the horse stopped",
            "The stable boy brushed the horses every morning",
            "She rode her pony across the meadow",
            "The stallion reared up on its hind legs",
            "The sound of hooves echoed down the road",
            "They fed the horses hay and oats in the stable",
        ],
    },
    "fire": {
        "keywords": "fire*,flame*,burn*,smoke*,smoking,blaze*,ember*,heat,spark*,torch*",
        "examples": [
            "The house caught fire and burned to the ground",
            "Flames leapt from the windows and smoke filled the sky",
            "The firefighters fought the blaze all night",
            "Sparks flew from the burning logs in the fireplace",
            "The forest fire spread quickly in the dry heat",
            "She lit a torch and the flame flickered",
            "The embers of the campfire glowed red",
            "Thick black smoke rose from the burning building",
        ],
    },
    "money": {
        "keywords": "money,gold*,coin*,dollar*,riches,wealth*,bank*,price*,cash,pound*,penny,pennies,fortune*,debt*,pay*,paid",
        "examples": [
            "He counted the gold coins in his purse",
            "The bank lent them money to buy the house",
            "She became rich and spent her fortune freely",
            "The price was ten dollars, and he paid in cash",
            "They owed a large debt to the money lender",
            "The merchant grew wealthy from his trade",
            "He saved every penny he earned",
            "The thief stole a bag full of money from the bank",
        ],
    },
    "space": {
        "keywords": "outer space,spacecraft*,spaceship*,planet*,moon*,astronaut*,rocket*,galax*,orbit*,universe*,telescope*,cosmos,cosmic,nasa,stars",
        "examples": [
            "The astronauts launched into space aboard the rocket",
            "The spacecraft entered orbit around the planet Mars",
            "Through the telescope we saw distant galaxies",
            "The universe is full of stars and planets",
            "The rocket carried the crew to the moon",
            "NASA sent a probe to explore the outer planets",
            "The space station orbits the Earth every ninety minutes",
            "Astronomers study the cosmos and the birth of stars",
        ],
    },
}
SITE = "blocks.9.hook_resid_post"
# norms of the vector added to the residual stream
NORMS = [0.0, 20.0, 30.0, 40.0, 45.0, 50.0, 55.0, 60.0, 70.0, 80.0, 100.0]
STRENGTH_LABEL = "norm of the vector added (residual ≈ 150)"
SHORTLIST = 5  # latents by effect whose steering is measured on the selection prompts
SELECTION_NORMS = [40.0, 50.0, 60.0]


def keywords_of(name: str) -> list[str]:
    return str(CONCEPTS[name]["keywords"]).split(",")


def examples_of(name: str) -> list[str]:
    return list(CONCEPTS[name]["examples"])


def choose_latent(model: rama.HookedModel, sae: SAE, name: str) -> dict[str, object]:
    """Contrast for candidates (what the latent reads), effect for a shortlist (what it writes one
    step ahead), then the shortlist's steering outcome on the selection prompts for the choice."""
    candidates = latents_by_contrast(sae, model, examples_of(name), NEUTRAL, top=128)
    shortlist = latents_by_effect(
        sae, model, SELECTION, keywords_of(name), candidates=[i for i, _ in candidates], top=SHORTLIST
    )
    ranked = rank_by_steering(
        model,
        {r.latent: clamp_from_position_1(model, sae, r.latent) for r in shortlist},
        SELECTION,
        SELECTION_NORMS,
        keyword_scorer(keywords_of(name)),
    )
    return {
        "latent": ranked[0][0],
        "ranked_by_effect": [r.__dict__ for r in shortlist],
        "ranked_by_steering_on_selection_prompts": [
            {"latent": latent, "best_under_2x_perplexity": None if best is None else asdict(best)}
            for latent, best in ranked
        ],
    }


def clamp_from_position_1(model: rama.HookedModel, sae: SAE, latent: int) -> Callable[[float], list[Hook]]:
    """Clamp the feature's activation from position 1 on (generated tokens included): a clamp to c
    adds about c·‖W_dec[latent]‖, so each norm on the axis is reached with c = norm / ‖W_dec[latent]‖."""
    row_norm = float(sae.W_dec[latent].detach().norm())
    return lambda norm: [set_features(model, sae, [latent], norm / row_norm, positions=slice(1, None))]


def sweep_feature(model: rama.HookedModel, sae: SAE, latent: int, name: str) -> SweepResult:
    return strength_sweep(
        model,
        clamp_from_position_1(model, sae, latent),
        PROMPTS,
        NORMS,
        keyword_scorer(keywords_of(name)),
        "keywords: " + ",".join(keywords_of(name)),
        SITE,
    )


def sweep_vector(model: rama.HookedModel, direction: torch.Tensor, name: str) -> SweepResult:
    unit = direction / direction.norm()
    return strength_sweep(
        model,
        lambda norm: [add_vector(model, SITE, unit, norm, positions=slice(1, None))],
        PROMPTS,
        NORMS,
        keyword_scorer(keywords_of(name)),
        "keywords: " + ",".join(keywords_of(name)),
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


def report(name: str, results: dict[str, SweepResult]) -> None:
    for method, result in results.items():
        points = ", ".join(f"{p.strength:g}→{p.concept_rate:.2f}/{p.perplexity:.1f}" for p in result.points)
        print(f"  {method}: {points}")
        best = result.best(2.0)
        if best is not None:
            print(f"    best under 2× perplexity: norm {best.strength:g}, rate {best.concept_rate:.2f}")
            print(f"    {best.examples[0]!r}")


def steer_concept(
    model: rama.HookedModel, sae: SAE, name: str, batches: list[torch.Tensor], out: Path
) -> dict[str, object]:
    choice = choose_latent(model, sae, name)
    latent = int(choice["latent"])  # type: ignore[call-overload]
    contexts = top_activations(sae, model, batches, [latent], k=5)[latent]
    print(f"{name}: latent {latent}; top contexts:")
    print("   " + " | ".join(repr(a.context[-40:]) for a in contexts))
    vector = contrastive_vector(model, SITE, examples_of(name), NEUTRAL, last_only=False)
    results = {
        f"SAE latent {latent} (clamp)": sweep_feature(model, sae, latent, name),
        f"contrastive vector (add; own norm {float(vector.norm()):.0f})": sweep_vector(model, vector, name),
    }
    plot_sweep(results, out / f"{name}.png", f"steering SmolLM2 towards '{name}' at {SITE}", STRENGTH_LABEL)
    report(name, results)
    return {
        **choice,
        "latent_top_contexts": [a.context for a in contexts],
        **{method: summary(r) for method, r in results.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sae", help=f"an SAE trained on {SITE} of SmolLM2-135M")
    parser.add_argument("--out", default="docs/steering")
    parser.add_argument("--concepts", default=",".join(CONCEPTS), help="which of the built-in concepts")
    parser.add_argument("--search-batches", type=int, default=8, help="corpus batches for top contexts")
    parser.add_argument("--replot", action="store_true", help="redraw the figures from OUT/steering.json")
    args = parser.parse_args()
    out = Path(args.out)
    if args.replot:
        return replot(out)
    model = rama.load("smollm2-135m")
    sae = SAE.load(args.sae)
    batches = list(token_batches(model.tokenizer, batch_size=8, config=PackConfig(context_size=128, seed=1)))
    path = out / "steering.json"
    record = json.loads(path.read_text()) if path.exists() else {}  # a subset run keeps the others' results
    record.update({"site": SITE, "prompts": PROMPTS, "selection_prompts": SELECTION})
    concepts = args.concepts.split(",")
    for name in concepts:
        found = steer_concept(model, sae, name, batches[: args.search_batches], out)
        record[name] = {"sae": f"{args.sae} ({sae.cfg.d_sae} latents)", **found}
        write_text(path, json.dumps(record, indent=1))  # after each concept: a long run keeps what it did
    if "sea" in concepts:
        record["golden_gate"] = golden_gate(model, sae, record)
        write_text(path, json.dumps(record, indent=1))


def replot(out: Path) -> None:
    record = json.loads((out / "steering.json").read_text())
    for name in CONCEPTS:
        if name not in record:
            continue
        results = {
            method: SweepResult([SweepPoint(**p) for p in data["points"]], "", SITE)
            for method, data in record[name].items()
            if isinstance(data, dict) and "points" in data
        }
        plot_sweep(
            results, out / f"{name}.png", f"steering SmolLM2 towards '{name}' at {SITE}", STRENGTH_LABEL
        )


def golden_gate(model: rama.HookedModel, sae: SAE, record: dict[str, object]) -> dict[str, object]:
    """Golden-Gate style: the 'sea' SAE latent clamped at the norm with the sweep's best concept rate
    under 2× perplexity, while the model talks about itself."""
    found = record["sea"]
    assert isinstance(found, dict)
    latent = int(found["latent"])
    method = next(key for key in found if key.startswith("SAE latent"))
    best = found[method]["best_under_2x_perplexity"]
    norm = best["strength"] if best else 50.0
    hook = set_features(
        model, sae, [latent], norm / float(sae.W_dec[latent].detach().norm()), positions=slice(1, None)
    )
    texts: dict[str, object] = {"latent": latent, "norm": norm}
    for prompt in (
        "Let me describe myself. I am",
        "My favourite place in the world is",
        "What I dream about is",
    ):
        plain = model.generate(prompt, max_new_tokens=25)
        steered = model.generate(prompt, max_new_tokens=25, fwd_hooks=[hook])
        print(
            f"\n{prompt!r}\n  unsteered: {plain[len(prompt) :]!r}\n  sea latent: {steered[len(prompt) :]!r}"
        )
        texts[prompt] = {"unsteered": plain, "steered": steered}
    return texts


if __name__ == "__main__":
    main()
