"""The same pipeline on two model families (issue 25): SAE quality at matched settings, induction heads,
one contrastive steering result, per model, from one run.

    python benchmarks/second_model.py --models smollm2-135m,gemma3-270m [--tokens 400000]
        [--batch-size 1024] [--eval-tokens 8192] [--work DIR] [--out benchmarks/results/second_model.json]

Gemma 3 270M is opt-in: it is fetched only when named in --models, under the Gemma Terms of Use (usage
conditions); it is never a default. Layers are matched by relative depth (30%: SmolLM2 9 of 30, Gemma 5
of 18); SAE width is 4 × d_model, so the expansion factor matches. Rates are over a handful of prompts.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import rama
from rama.atomic import write_text
from rama.circuits import pattern_head_scores
from rama.interventions import add_vector, contrastive_vector
from rama.interventions.steering import relative_vector, typical_norm
from rama.sae.scaling import ScalingConfig, run_grid

DEPTH = 0.3  # the layer every part of the study reads, as a fraction of the model's depth
POSITIVE = [
    "I love this. It is wonderful, beautiful and happy.",
    "What a great, delightful and joyful day.",
    "This is excellent, lovely and fantastic.",
]
NEGATIVE = [
    "I hate this. It is terrible, ugly and sad.",
    "What an awful, miserable and painful day.",
    "This is horrible, dreadful and disgusting.",
]
PROMPTS = [
    "I think the movie was",
    "My day today was",
    "The food at the restaurant was",
    "When I opened the letter, I felt",
    "The weather this week has been",
    "Our new neighbours are",
    "The book I read last night was",
    "Honestly, the concert was",
]
WORDS = {
    "positive": "love loved lovely great good wonderful beautiful happy joy joyful delightful excellent "
    "fantastic amazing best nice perfect enjoy enjoyed glad pleasant brilliant",
    "negative": "hate hated terrible awful bad sad ugly horrible miserable painful dreadful disgusting "
    "worst boring angry disappointing disappointed poor",
}


def site_layer(model: Any) -> int:
    """The layer at `DEPTH` of the model's depth (SmolLM2: 9 of 30; Gemma 3 270M: 5 of 18)."""
    return int(DEPTH * model.cfg.n_layers)


def sae_row(model: Any, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One TopK SAE (width 4 × d_model, k 32) trained and evaluated on held-out tokens by `run_grid`."""
    site = f"blocks.{site_layer(model)}.hook_resid_post"
    width = 4 * model.cfg.d_model
    work = Path(args.work) / name
    config = ScalingConfig(
        widths=[width], ks=[args.k], tokens=[args.tokens], model=name, site=site, cache=str(work / "cache"),
        out=str(work / "sae"), batch_size=args.batch_size, eval_tokens=args.eval_tokens, seed=0,
    )  # fmt: skip
    start = time.perf_counter()
    [record] = run_grid(model, config, progress=False)
    return {"site": site, **record, "wall_seconds": round(time.perf_counter() - start, 1)}


def induction_row(model: Any) -> dict[str, Any]:
    """Induction score per head on repeated random tokens (BOS, 50 random tokens, the same 50 again)."""
    scores = pattern_head_scores(model, batch=8, half=50, seed=0)["induction"]
    values, flat = scores.flatten().topk(3)
    heads = scores.shape[1]
    top = [[i // heads, i % heads, round(v, 3)] for v, i in zip(values.tolist(), flat.tolist(), strict=True)]
    return {"top3": top, "heads_over_0.4": int((scores > 0.4).sum()), "heads": scores.numel()}


def word_rate(texts: list[str], words: str) -> float:
    """The share of `texts` with at least one whole word from `words`."""
    pattern = re.compile(r"\b(" + "|".join(words.split()) + r")\b", re.IGNORECASE)
    return sum(bool(pattern.search(t)) for t in texts) / len(texts)


def continuations(model: Any, hooks: list[Any], new_tokens: int) -> list[str]:
    """Greedy continuations of `PROMPTS` (prompt text removed), with `hooks` at every position."""
    out = []
    for prompt in PROMPTS:
        text = str(model.generate(prompt, max_new_tokens=new_tokens, fwd_hooks=hooks))
        out.append(text[len(prompt) :] if text.startswith(prompt) else text)
    return out


def steering_row(model: Any, strengths: list[float], new_tokens: int) -> dict[str, Any]:
    """Positive-minus-negative contrastive vector at the `DEPTH` layer, rescaled to `strength` × the
    site's typical residual norm (so one strength means the same thing in both models)."""
    site = f"blocks.{site_layer(model)}.hook_resid_post"
    raw = contrastive_vector(model, site, POSITIVE, NEGATIVE)
    norm = typical_norm(model, site)
    rows = []
    for strength in [0.0, *strengths]:
        hooks = (
            []
            if strength == 0
            else [add_vector(model, site, relative_vector(model, site, raw, strength, norm))]
        )
        texts = continuations(model, hooks, new_tokens)
        rows.append({"strength": strength, "positive_rate": word_rate(texts, WORDS["positive"]),
                     "negative_rate": word_rate(texts, WORDS["negative"]), "example": PROMPTS[0] + texts[0]})  # fmt: skip
    return {"site": site, "typical_norm": round(norm, 2), "prompts": len(PROMPTS), "new_tokens": new_tokens,
            "rows": rows}  # fmt: skip


def study(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every part of the study on one model, each timed."""
    start = time.perf_counter()
    model = rama.load(name)
    c = model.cfg
    row: dict[str, Any] = {"model": name, "n_layers": c.n_layers, "d_model": c.d_model, "n_heads": c.n_heads,
                           "load_seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
    torch.manual_seed(0)
    with torch.no_grad():
        row["induction"] = induction_row(model)
        row["steering"] = steering_row(model, args.strengths, args.new_tokens)
    if not args.skip_sae:
        row["sae"] = sae_row(model, name, args)
    return row


def print_tables(rows: list[dict[str, Any]]) -> None:
    print("\nmodel | site | width | k | tokens | FVU | L0 | dead | CE recovered | train s")
    for r in rows:
        s = r.get("sae")
        if s:
            print(f"{r['model']} | {s['site']} | {s['width']} | {s['k']} | {s['tokens']:,} | {s['fvu']:.3f} | "
                  f"{s['l0']:.1f} | {s['dead_fraction']:.3f} | {s['ce_loss_recovered']:.3f} | {s['train_seconds']:.0f}")  # fmt: skip
    print("\nmodel | induction top 3 (layer.head score) | heads > 0.4")
    for r in rows:
        i = r["induction"]
        top = ", ".join(f"{la}.{h} {v:.3f}" for la, h, v in i["top3"])
        print(f"{r['model']} | {top} | {i['heads_over_0.4']} of {i['heads']}")
    print("\nmodel | strength | positive rate | negative rate | example")
    for r in rows:
        for s in r["steering"]["rows"]:
            example = s["example"].replace("\n", " ")
            print(
                f"{r['model']} | {s['strength']} | {s['positive_rate']:.2f} | {s['negative_rate']:.2f} | {example}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", required=True, help="comma-separated; gemma3-270m only if you name it")
    parser.add_argument("--tokens", type=int, default=400_000, help="SAE training tokens")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--eval-tokens", type=int, default=8192)
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.5, 1.0], help="× typical norm")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--skip-sae", action="store_true", help="induction and steering only")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "rama-second-model"))
    parser.add_argument("--out", default="benchmarks/results/second_model.json")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for name in args.models.split(","):
        rows.append(study(name, args))
        save(rows, args)  # after each model: a run stopped in the second keeps the first
    print_tables(rows)


def save(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The rows so far, with date, machine and settings, written atomically to `args.out`."""
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor()
              or platform.machine(), "threads": torch.get_num_threads(), "settings": {k: v for k, v in
              vars(args).items() if k not in ("out", "work")}, "models": rows}  # fmt: skip
    write_text(Path(args.out), json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
