"""What interventions cost on SmolLM2-135M, interleaved round by round in one run:

- greedy generation of 32 tokens for 8 prompts: HF plain, rama unsteered, rama ActAdd at one site,
  rama direction clamp, rama SAE feature clamp (4,608 latents, encode + decode per step), and (when
  installed) nnsight adding the same vector inside `generate`;
- attribution patching over every sweep (resid_pre, attn_out, mlp_out, heads: 120 sites) against one
  plain forward pass, and real activation patching of the 270 heads for scale.

    python benchmarks/interventions.py [--repeats 5] [--json benchmarks/results/interventions.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import rama
from rama.interventions import (
    activation_patching,
    add_vector,
    attribution_patching,
    clamp_direction,
    set_features,
)
from rama.sae.base import SAE, SAEConfig
from rama.sae.topk import TopKConfig

SITE = "blocks.12.hook_resid_post"
PROMPTS = [
    "The best way to spend a day is",
    "Yesterday I went to the",
    "My favourite thing about winter is",
    "She told me that the",
    "In the morning we",
    "Let me tell you about",
    "The most important thing in life",
    "Last week our teacher",
]
Work = Callable[[], Any]


def generation_cases(model: Any, new_tokens: int) -> dict[str, Work]:
    vector = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    sae = SAE.create(
        SAEConfig(
            d_in=model.cfg.d_model, d_sae=4608, architecture="topk", arch=TopKConfig(k=32), hook_name=SITE
        )
    )
    batch = model.tokenize(PROMPTS, padding_side="left")
    options = {"max_new_tokens": new_tokens, "do_sample": False, "pad_token_id": model.tokenizer.pad_token_id}

    def hf_plain() -> Any:
        return model.hf.generate(input_ids=batch.tokens, attention_mask=batch.attention_mask, **options)

    def rama_with(hooks: list[Any]) -> Work:
        return lambda: model.generate(PROMPTS, max_new_tokens=new_tokens, fwd_hooks=hooks)

    cases = {
        "HF generate": hf_plain,
        "rama generate, unsteered": rama_with([]),
        "rama ActAdd (add_vector)": rama_with([add_vector(model, SITE, vector, 4.0)]),
        "rama clamp_direction": rama_with([clamp_direction(model, SITE, vector, 10.0)]),
        "rama SAE feature clamp (4608 latents)": rama_with([set_features(model, sae, [7], 20.0)]),
    }
    cases.update(nnsight_case(model, vector, batch, new_tokens))
    return cases


def nnsight_case(model: Any, vector: torch.Tensor, batch: Any, new_tokens: int) -> dict[str, Work]:
    """nnsight (0.8) adding the same vector at the same layer on every generation step; the tokens it
    generates are checked against rama's ActAdd, so both rows do the same work."""
    try:
        from nnsight import LanguageModel
    except ImportError:
        return {}
    wrapped = LanguageModel(model.hf, tokenizer=model.tokenizer)
    inputs = {"input_ids": batch.tokens, "attention_mask": batch.attention_mask}
    layer = int(SITE.split(".")[1])

    def steer() -> torch.Tensor:
        with wrapped.generate(inputs, max_new_tokens=new_tokens, do_sample=False, pad_token_id=model.tokenizer.pad_token_id) as tracer:  # fmt: skip
            for _ in tracer.iter[:new_tokens]:  # the prompt pass, then one pass per further token
                wrapped.model.layers[layer].output[:] += 4.0 * vector
            ids = tracer.result.save()
        return ids

    theirs = model.tokenizer.batch_decode(steer()[:, batch.tokens.shape[1] :], skip_special_tokens=True)
    ours = model.generate(
        PROMPTS, max_new_tokens=new_tokens, fwd_hooks=[add_vector(model, SITE, vector, 4.0)]
    )
    same = sum(a == p + t for a, p, t in zip(ours, PROMPTS, theirs, strict=True))
    print(f"nnsight and rama ActAdd generate the same text for {same} of {len(PROMPTS)} prompts")
    return {"nnsight generate + add (tracer.iter)": steer}


def patching_cases(model: Any) -> dict[str, Work]:
    clean = model.to_tokens("When Mary and John went to the store, John gave a drink to")
    corrupted = model.to_tokens("When Mary and John went to the store, Mary gave a drink to")
    mary, john = (model.tokenizer.encode(w)[0] for w in (" Mary", " John"))

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return (logits[:, -1, mary] - logits[:, -1, john]).mean()

    return {
        "one forward pass (same prompt)": lambda: model(clean),
        "attribution patching, 4 sweeps (120 sites)": lambda: attribution_patching(
            model, clean, corrupted, metric
        ),
        "activation patching, 270 heads": lambda: activation_patching(
            model, clean, corrupted, metric, sweep="heads"
        ),
    }


def measure(cases: dict[str, Work], repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in cases}
    for work in cases.values():
        work()  # warm-up
    for _ in range(repeats):
        for name, work in cases.items():
            start = time.perf_counter()
            work()
            times[name].append(time.perf_counter() - start)
    return times


def table(times: dict[str, list[float]], base: str, title: str) -> dict[str, dict[str, float]]:
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"\n| {title} | seconds (median) | ÷ {base} |\n|---|---|---|")
    rows = {}
    for name, seconds in medians.items():
        rows[name] = {"seconds": seconds, "ratio": seconds / medians[base]}
        print(f"| {name} | {seconds:.3f} | {seconds / medians[base]:.3f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    model = rama.load("smollm2-135m")
    with torch.no_grad():
        generation = table(
            measure(generation_cases(model, args.new_tokens), args.repeats),
            "rama generate, unsteered",
            f"generation, 8 prompts × {args.new_tokens} new tokens",
        )
    patching = table(
        measure(patching_cases(model), args.repeats), "one forward pass (same prompt)", "patching, 1 prompt"
    )
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"\nmachine: {machine}; median of {args.repeats}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine, "generation": generation, "patching": patching}, handle, indent=2)


if __name__ == "__main__":
    main()
