"""Measured steering on SmolLM2-135M: concepts steered with an SAE feature and with a contrastive
vector, each over a sweep of strengths, scored by concept rate (keyword scorer) and perplexity under
the unsteered model; then a Golden-Gate-style clamp.

The SAE latent for a concept is found in three steps, none of which sees the evaluation prompts:
candidates are the 128 latents most active on short concept texts against neutral ones
(`latents_by_contrast`), or with `--search-all` the 128 best by effect among every latent on four
selection prompts; the five (`--shortlist`) among them whose decoder rows most raise the probability of the concept's
words when added (`latents_by_effect`, on the selection prompts) are each steered at the selection
norms on the selection prompts, and the one with the highest concept rate under 2× perplexity is
chosen (`rank_by_steering`). Strengths are the norm of what is added to the residual stream, so both
methods share one axis (the residual norm is ≈ 150 at layer 9, ≈ 200 at layer 18). 32 evaluation
prompts; the keyword lists are fixed in CONCEPTS. `--min-selection-rate 0.8` screens concepts: only
those whose chosen latent reaches 0.8 on the selection prompts get the evaluation sweeps.

    rama sae train --site blocks.9.hook_resid_post --width 4608 --k 32 --tokens 1500000 --out sae-l9
    python examples/steering.py sae-l9 [--out docs/steering/results/l9] [--concepts sea,music]
    rama sae train --site blocks.18.hook_resid_post --width 4608 --k 32 --tokens 1000000 --out sae-l18
    python examples/steering.py sae-l18 --out docs/steering/results/l18 --concepts religion,sea,space --search-all \
        --effect-norm 65 --selection-norms 65,80,95,110 --norms 0,40,60,70,80,90,100,110,120,140 \
        --min-selection-rate 0.8
    python examples/steering.py sae-l12 --out docs/steering/results/l12 --search-all \
        --effect-norm 55 --selection-norms 45,55,65,80 --norms 0,30,40,50,60,70,80,90,100,120 \
        --min-selection-rate 0.8
    rama sae train --site blocks.15.hook_resid_post --width 4608 --k 32 --tokens 1000000 --out sae-l15
    python examples/steering.py sae-l15 --out docs/steering/results/l15 --search-all \
        --effect-norm 65 --selection-norms 50,65,80,100 --norms 0,30,40,50,60,70,80,90,100,120 \
        --min-selection-rate 0.8
    python examples/generated_corpus.py --out answers.jsonl --tokens 330000
    rama sae train --site blocks.12.hook_resid_post --width 4608 --k 32 --tokens 1000000 \
        --harvest-tokens 290000 --corpus answers.jsonl --out sae-l12-gen
    python examples/steering.py sae-l12-gen --out docs/steering/results/l12-gen --search-all --corpus answers.jsonl \
        --effect-norm 55 --selection-norms 45,55,65,80 --norms 0,30,40,50,60,70,80,90,100,120 \
        --min-selection-rate 0.8
    rama sae train --site blocks.9.hook_resid_post --width 4608 --k 32 --tokens 1000000 \
        --harvest-tokens 290000 --corpus answers.jsonl --out sae-l9-gen
    python examples/steering.py sae-l9-gen --out docs/steering/results/l9-gen --search-all --corpus answers.jsonl \
        --concepts space,war --min-selection-rate 0.8

    python examples/steering.py sae-l9 --out docs/steering/results/l9-wide --search-all --shortlist 24 \
        --concepts space,sea,music,food,war --min-selection-rate 0.8
    rama sae train --site blocks.9.hook_resid_post --arch matryoshka --width 4608 --k 32 --tokens 1500000 \
        --out sae-l9-mat
    python examples/steering.py sae-l9-mat --out docs/steering/results/l9-matryoshka --search-all --min-selection-rate 0.8
    python examples/steering.py sae-l9-mat --out docs/steering/results/l9-matryoshka-high --search-all \
        --concepts religion,computers,music,space,war,food --selection-norms 50,60,70,80,90 \
        --norms 0,20,30,40,50,60,70,80,90,100,120 --min-selection-rate 0.8
    rama sae train --site blocks.6.hook_resid_post --width 4608 --k 32 --tokens 1500000 --out sae-l6
    python examples/steering.py sae-l6 --out docs/steering/results/l6 --search-all --effect-norm 38 \
        --selection-norms 30,40,50,60 --norms 0,15,20,25,30,35,40,45,50,60,75 --min-selection-rate 0.8
    rama sae train --site blocks.9.hook_resid_post --width 4608 --k 32 --tokens 3000000 --out sae-l9-3m
    python examples/steering.py sae-l9-3m --out docs/steering/results/l9-3m --search-all --min-selection-rate 0.8
    python examples/steering.py sae-l9-3m --out docs/steering/results/l9-3m-wide --search-all --shortlist 24 \
        --concepts sea,music --selection-norms 30,40,50,60 --min-selection-rate 0.8
    rama sae train --site blocks.15.hook_resid_post --width 4608 --k 32 --tokens 3000000 --out sae-l15-3m
    python examples/steering.py sae-l15-3m --out docs/steering/results/l15-3m --search-all --shortlist 24 --concepts music,sea \
        --effect-norm 65 --selection-norms 50,65,80,100 --norms 0,30,40,50,60,70,80,90,100,120 \
        --min-selection-rate 0.8              # then the other fourteen concepts, with the default --shortlist 5
    python examples/gpu_sae.py pack --blocks 10 --out .device          # then train on the GPU machine, and:
    python examples/gpu_sae.py unpack RETURNED --out .                  # (the machine's sae-9 -> sae-l9-100m)
    python examples/steering.py sae-l9-100m --out docs/steering/results/l9-100m --search-all --min-selection-rate 0.8
    python examples/steering.py sae-l9-100m --out docs/steering/results/l9-100m-wide --search-all --shortlist 24 \
        --concepts sea --min-selection-rate 0.8
    python examples/steering.py sae-l9-100m --out docs/steering/results/l9-100m-high --search-all --concepts sea,music \
        --selection-norms 40,50,60,70,80 --min-selection-rate 0.8

A run of some concepts rewrites their entries in OUT/steering.json and keeps the others' (each entry names
the SAE and protocol it used; each sweep point carries its strength).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import rama
from rama.atomic import write_text
from rama.data import PackConfig, token_batches
from rama.features import (
    latents_by_contrast,
    latents_by_effect,
    latents_by_effect_per_concept,
    top_activations,
)
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
    "royalty": {
        "keywords": "king,kings,queen*,prince*,princess*,throne*,crown*,royal*,reign*,palace*,majesty,kingdom*,monarch*,duke*,emperor*",
        "examples": [
            "The king and queen sat upon their thrones",
            "The prince was crowned in the great palace",
            "Her Majesty the Queen greeted the royal guests",
            "The old king ruled the kingdom for forty years",
            "The princess lived in a castle with the royal family",
            "The emperor's crown was made of gold and jewels",
            "The duke bowed before the monarch",
            "During his reign the king built a new palace",
        ],
    },
    "computers": {
        "keywords": "computer*,program*,software,hardware,code,coding,coder*,hacker*,data,internet,keyboard*,algorithm*,byte*,digital,laptop*,cpu,unix,linux",
        "examples": [
            "The programmer wrote the code on his laptop",
            "The computer crashed and the software lost the data",
            "Hackers broke into the network over the internet",
            "She typed the program on the keyboard and ran it",
            "The algorithm sorts a list of numbers quickly",
            "The file is stored on disk as a string of bytes",
            "He installed Linux on his old computer",
            "The software engineer fixed a bug in the code",
        ],
    },
    "death": {
        "keywords": "death*,dead,die,dies,died,dying,grave*,tomb*,funeral*,corpse*,buried,bury,burial*,mourn*,coffin*",
        "examples": [
            "The old man died in his sleep last night",
            "They buried her in the churchyard beside her husband",
            "Mourners gathered at the funeral to weep",
            "The coffin was lowered into the grave",
            "He lay dying, and soon he was dead",
            "The corpse was found in the tomb",
            "Death came for him at the end of the winter",
            "We mourn the death of our dear friend",
        ],
    },
    "love": {
        "keywords": "love*,lover*,loving,beloved,kiss*,darling,romance,romantic,passion*,sweetheart*,embrace*",
        "examples": [
            "She loved him with all her heart",
            "The lovers kissed beneath the moonlight",
            "My darling, I will love you forever",
            "He wrote a romantic letter to his beloved",
            "Their passion for each other never faded",
            "She embraced her sweetheart at the station",
            "It was love at first sight for both of them",
            "He whispered that he loved her and kissed her hand",
        ],
    },
    "medicine": {
        "keywords": "doctor*,medicine*,medical,disease*,illness*,sick*,fever*,patient*,hospital*,nurse*,cure*,heal*,symptom*,infection*,surgeon*,treatment*",
        "examples": [
            "The doctor examined the patient and found a fever",
            "She was taken to the hospital with a serious illness",
            "The nurse gave him medicine for the infection",
            "The disease spread quickly and many fell sick",
            "The surgeon operated on his heart",
            "There is no cure yet for this disease",
            "The symptoms include a cough, a fever and pain",
            "The treatment helped the wound to heal",
        ],
    },
    "plants": {
        "keywords": "plant*,flower*,tree*,leaf,leaves,seed*,garden*,bloom*,blossom*,petal*,herb*,shrub*,roots,stem*,branch*",
        "examples": [
            "The roses in the garden are in full bloom",
            "The tree shed its leaves in the autumn",
            "She planted seeds and watered the young plants",
            "The shrub has small white flowers and green leaves",
            "Herbs grew in pots on the kitchen windowsill",
            "Petals fell from the cherry blossoms",
            "The roots of the oak spread deep under the soil",
            "The branches of the apple tree were heavy with fruit",
        ],
    },
}
SHORTLIST = 5  # latents by effect whose steering is measured on the selection prompts
COARSE_PROMPTS = 4  # selection prompts for the first pass of a search over every latent
STRENGTH_LABEL = "norm of the vector added to the residual stream"


@dataclass(frozen=True)
class Protocol:
    """How one SAE's concepts are chosen and swept; strengths are norms of what is added to the
    residual stream at the SAE's site, so both methods share one axis."""

    site: str
    norms: list[float]  # the evaluation sweep; 0 is the unsteered baseline
    selection_norms: list[float]  # the shortlist's steering on the selection prompts
    effect_norm: float  # the norm at which `latents_by_effect` adds each decoder row
    search_all: bool  # rank every latent by effect, not only those most active on concept texts
    shortlist: int = SHORTLIST  # latents by effect whose steering is measured on the selection prompts


def title(name: str, site: str) -> str:
    return f"steering SmolLM2 towards '{name}' at {site}"


def keywords_of(name: str) -> list[str]:
    return str(CONCEPTS[name]["keywords"]).split(",")


def examples_of(name: str) -> list[str]:
    return list(CONCEPTS[name]["examples"])


def candidate_latents(
    model: rama.HookedModel, sae: SAE, names: list[str], protocol: Protocol
) -> dict[str, list[int]]:
    """128 candidates per concept: by what they read (most active on the concept texts), or, with
    `search_all`, by what they write (every latent's effect on four selection prompts, all concepts
    scored from one set of passes: latents that steer need not fire on the concept, as Arad et al.
    2025 found for "output features")."""
    if not protocol.search_all:
        return {
            name: [i for i, _ in latents_by_contrast(sae, model, examples_of(name), NEUTRAL, top=128)]
            for name in names
        }
    coarse = latents_by_effect_per_concept(
        sae,
        model,
        SELECTION[:COARSE_PROMPTS],
        {name: keywords_of(name) for name in names},
        norm=protocol.effect_norm,
        top=128,
        progress=True,
    )
    return {name: [r.latent for r in ranked] for name, ranked in coarse.items()}


def choose_latent(
    model: rama.HookedModel, sae: SAE, name: str, candidates: list[int], protocol: Protocol
) -> dict[str, object]:
    """Candidates, then effect for a shortlist (what each writes one step ahead), then the shortlist's
    steering outcome on the selection prompts for the choice."""
    shortlist = latents_by_effect(
        sae,
        model,
        SELECTION,
        keywords_of(name),
        candidates=candidates,
        norm=protocol.effect_norm,
        top=protocol.shortlist,
    )
    ranked = rank_by_steering(
        model,
        {r.latent: clamp_from_position_1(model, sae, r.latent) for r in shortlist},
        SELECTION,
        protocol.selection_norms,
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


def add_from_position_1(
    model: rama.HookedModel, site: str, direction: torch.Tensor
) -> Callable[[float], list[Hook]]:
    """Add the direction, scaled to each norm on the axis, from position 1 on (generated tokens included)."""
    unit = direction / direction.norm()
    return lambda norm: [add_vector(model, site, unit, norm, positions=slice(1, None))]


def sweep(
    model: rama.HookedModel, hooks_at: Callable[[float], list[Hook]], name: str, protocol: Protocol
) -> SweepResult:
    return strength_sweep(
        model,
        hooks_at,
        PROMPTS,
        protocol.norms,
        keyword_scorer(keywords_of(name)),
        "keywords: " + ",".join(keywords_of(name)),
        protocol.site,
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


def selection_rate(choice: dict[str, object]) -> float:
    """The chosen latent's best concept rate under 2× perplexity on the selection prompts."""
    ranked = choice["ranked_by_steering_on_selection_prompts"]
    assert isinstance(ranked, list)
    best = ranked[0]["best_under_2x_perplexity"]
    return 0.0 if best is None else float(best["concept_rate"])


def screen_vector(
    model: rama.HookedModel, vector: torch.Tensor, name: str, protocol: Protocol
) -> dict[str, object] | None:
    """The contrastive vector's best point under 2× perplexity on the selection prompts (for the record:
    screening decides on the SAE latent alone, the harder of the two)."""
    ranked = rank_by_steering(
        model,
        {"contrastive": add_from_position_1(model, protocol.site, vector)},
        SELECTION,
        protocol.selection_norms,
        keyword_scorer(keywords_of(name)),
    )
    best = ranked[0][1]
    return None if best is None else asdict(best)


def steer_concept(
    model: rama.HookedModel,
    sae: SAE,
    name: str,
    candidates: list[int],
    batches: list[torch.Tensor],
    out: Path,
    protocol: Protocol,
    min_selection_rate: float = 0.0,
) -> dict[str, object]:
    choice = choose_latent(model, sae, name, candidates, protocol)
    latent = int(choice["latent"])  # type: ignore[call-overload]
    contexts = top_activations(sae, model, batches, [latent], k=5)[latent]
    print(f"{name}: latent {latent}; top contexts:")
    print("   " + " | ".join(repr(a.context[-40:]) for a in contexts))
    vector = contrastive_vector(model, protocol.site, examples_of(name), NEUTRAL, last_only=False)
    screened = {"contrastive_on_selection_prompts": screen_vector(model, vector, name, protocol)}
    found = {**choice, **screened, "latent_top_contexts": [a.context for a in contexts]}
    rate = selection_rate(choice)
    if rate < min_selection_rate:
        print(f"  not evaluated: the latent reaches {rate:.2f} on the selection prompts")
        return {**found, "evaluated": False}
    results = {
        f"SAE latent {latent} (clamp)": sweep(
            model, clamp_from_position_1(model, sae, latent), name, protocol
        ),
        f"contrastive vector (add; own norm {float(vector.norm()):.0f})": sweep(
            model, add_from_position_1(model, protocol.site, vector), name, protocol
        ),
    }
    plot_sweep(results, out / f"{name}.png", title(name, protocol.site), STRENGTH_LABEL)
    report(name, results)
    return {**found, "evaluated": True, **{method: summary(r) for method, r in results.items()}}


def norms(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sae", help="an SAE trained on a residual-stream site of SmolLM2-135M")
    parser.add_argument("--out", default="docs/steering/results/l9")
    parser.add_argument("--concepts", default=",".join(CONCEPTS), help="which of the built-in concepts")
    parser.add_argument("--search-batches", type=int, default=8, help="corpus batches for top contexts")
    parser.add_argument(
        "--corpus", default=None, help="corpus for the top contexts (default: the built-in English corpus)"
    )
    parser.add_argument("--replot", action="store_true", help="redraw the figures from OUT/steering.json")
    parser.add_argument(
        "--min-selection-rate",
        type=float,
        default=0.0,
        help="evaluate only concepts whose chosen latent reaches this concept rate under 2x perplexity "
        "on the selection prompts (screening many concepts without touching the evaluation prompts)",
    )
    parser.add_argument(
        "--norms",
        type=norms,
        default=norms("0,20,30,40,45,50,55,60,70,80,100"),
        help="evaluation sweep: norms of what is added (comma-separated; 0 is the unsteered baseline)",
    )
    parser.add_argument(
        "--selection-norms",
        type=norms,
        default=norms("40,50,60"),
        help="norms at which the shortlisted latents are steered on the selection prompts",
    )
    parser.add_argument(
        "--effect-norm", type=float, default=50.0, help="norm at which each latent's effect is measured"
    )
    parser.add_argument(
        "--search-all", action="store_true", help="rank every latent by effect, not 128 by contrast"
    )
    parser.add_argument(
        "--shortlist",
        type=int,
        default=SHORTLIST,
        help="how many of the best latents by effect are steered on the selection prompts",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    if args.replot:
        return replot(out)
    concepts = args.concepts.split(",")
    unknown = sorted(set(concepts) - set(CONCEPTS))
    if unknown:  # before minutes of loading
        raise SystemExit(f"unknown concepts {unknown}; the built-in ones are {', '.join(CONCEPTS)}")
    if args.shortlist < 1:
        raise SystemExit(
            f"--shortlist must be at least 1 (the latents steered on the selection prompts); got {args.shortlist}"
        )
    model = rama.load("smollm2-135m")
    sae = SAE.load(args.sae)
    protocol = Protocol(
        sae.cfg.hook_name,
        args.norms,
        args.selection_norms,
        args.effect_norm,
        args.search_all,
        args.shortlist,
    )
    batches = list(
        token_batches(
            model.tokenizer,
            args.corpus,
            batch_size=8,
            config=PackConfig(context_size=128, seed=1),
            max_tokens=args.search_batches * 8 * 128,
        )
    )
    path = out / "steering.json"
    record = json.loads(path.read_text()) if path.exists() else {}  # a subset run keeps the others' results
    record.update({"site": protocol.site, "prompts": PROMPTS, "selection_prompts": SELECTION})
    candidates = candidate_latents(model, sae, concepts, protocol)
    for name in concepts:
        found = steer_concept(
            model,
            sae,
            name,
            candidates[name],
            batches,
            out,
            protocol,
            args.min_selection_rate,
        )
        record[name] = {"sae": f"{args.sae} ({sae.cfg.d_sae} latents)", "protocol": asdict(protocol), **found}
        write_text(path, json.dumps(record, indent=1))  # after each concept: a long run keeps what it did
    if "sea" in concepts and record["sea"]["evaluated"]:
        record["golden_gate"] = golden_gate(model, sae, record)
        write_text(path, json.dumps(record, indent=1))


def replot(out: Path) -> None:
    record = json.loads((out / "steering.json").read_text())
    site = str(record["site"])
    for name in CONCEPTS:
        if name not in record:
            continue
        results = {
            method: SweepResult([SweepPoint(**p) for p in data["points"]], "", site)
            for method, data in record[name].items()
            if isinstance(data, dict) and "points" in data
        }
        if not results:  # screened out: no evaluation sweeps to draw
            continue
        plot_sweep(results, out / f"{name}.png", title(name, site), STRENGTH_LABEL)


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
