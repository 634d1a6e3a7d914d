"""Hook overhead on SmolLM2-135M: plain HF, raw PyTorch hooks, rama, and (when installed) nnsight and
TransformerLens's TransformerBridge, all in one run, interleaved round by round so drift hits all alike.

    python benchmarks/hook_overhead.py [--repeats 7] [--batch-size 8] [--context 128] [--json out.json]

Prints a markdown table of tokens/s (median over repeats) and the ratios the foundation issue targets.
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
from rama.data import PackConfig, token_batches
from rama.models.loading import models_cache

Work = Callable[[], Any]


def rama_cases(model: Any, tokens: torch.Tensor) -> dict[str, Work]:
    hf = model.hf

    def raw_hooks() -> Any:
        saved: list[torch.Tensor] = []
        handles = [
            layer.register_forward_hook(lambda m, a, o: saved.append(o.detach())) for layer in hf.model.layers
        ]
        try:
            return hf(input_ids=tokens, use_cache=False).logits, saved
        finally:
            for handle in handles:
                handle.remove()

    return {
        "HF plain forward": lambda: hf(input_ids=tokens, use_cache=False).logits,
        "HF output_hidden_states=True": lambda: (
            hf(input_ids=tokens, use_cache=False, output_hidden_states=True).hidden_states
        ),
        "raw PyTorch hooks, 30 layer outputs": raw_hooks,
        "rama, no hooks": lambda: model(tokens),
        "rama, cache 30 resid_post": lambda: model.run_with_cache(tokens, "blocks.*.hook_resid_post"),
        "rama, cache every site but hook_result": lambda: model.run_with_cache(
            tokens, lambda name: not name.endswith("hook_result")
        ),
        "rama, cache every site": lambda: model.run_with_cache(tokens),
    }


def nnsight_cases(model: Any, tokens: torch.Tensor) -> dict[str, Work]:
    try:
        from nnsight import LanguageModel
    except ImportError:
        return {}
    wrapped = LanguageModel(model.hf, tokenizer=model.tokenizer)

    def resid() -> Any:
        saved: list[Any] = []  # nnsight re-executes the block's source: collect into an outer list
        with wrapped.trace(tokens, use_cache=False):
            for layer in wrapped.model.layers:
                saved.append(layer.output.save())
        assert len(saved) == 30 and isinstance(saved[0], torch.Tensor)
        return saved

    return {"nnsight, save 30 layer outputs": resid}


def bridge_cases(tokens: torch.Tensor) -> dict[str, Work]:
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        return {}
    bridge = TransformerBridge.boot_transformers(str(models_cache() / "smollm2-135m"), device="cpu")
    return {
        "TransformerBridge, cache resid_post": lambda: bridge.run_with_cache(
            tokens, names_filter=lambda n: n.endswith("hook_resid_post")
        ),
        "TransformerBridge, cache every hook": lambda: bridge.run_with_cache(tokens),
    }


def measure(cases: dict[str, Work], repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in cases}
    with torch.no_grad():
        for work in cases.values():  # warm-up
            work()
        for _ in range(repeats):
            for name, work in cases.items():
                start = time.perf_counter()
                result = work()
                times[name].append(time.perf_counter() - start)
                del result
    return times


def report(times: dict[str, list[float]], n_tokens: int) -> dict[str, Any]:
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians["HF plain forward"]
    rows = {
        name: {"tokens_per_s": n_tokens / m, "time_vs_hf_plain": m / base, "seconds": times[name]}
        for name, m in medians.items()
    }
    print(f"\n| work (SmolLM2-135M, {n_tokens} tokens) | tokens/s | time ÷ HF plain |")
    print("|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['tokens_per_s']:.0f} | {row['time_vs_hf_plain']:.3f} |")
    targets = {
        "rama no hooks ÷ HF plain (target ≤ 1.02)": medians["rama, no hooks"] / base,
        "rama resid cache ÷ HF hidden_states (target ≤ 1.10)": medians["rama, cache 30 resid_post"]
        / medians["HF output_hidden_states=True"],
    }
    for peer in ("nnsight, save 30 layer outputs", "TransformerBridge, cache resid_post"):
        if peer in medians:
            targets[f"{peer} ÷ rama resid cache (> 1 means rama is faster)"] = (
                medians[peer] / medians["rama, cache 30 resid_post"]
            )
    if "TransformerBridge, cache every hook" in medians:
        targets["TransformerBridge every hook ÷ rama every site but hook_result (TL computes no result)"] = (
            medians["TransformerBridge, cache every hook"] / medians["rama, cache every site but hook_result"]
        )
    print()
    for label, value in targets.items():
        print(f"- {label}: {value:.3f}")
    return {"rows": rows, "ratios": targets}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--no-peers", action="store_true", help="measure HF, raw hooks and rama only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = rama.load("smollm2-135m")
    config = PackConfig(context_size=args.context, seed=0)
    tokens = next(token_batches(model.tokenizer, batch_size=args.batch_size, config=config))
    cases = rama_cases(model, tokens)
    if not args.no_peers:
        cases.update({**nnsight_cases(model, tokens), **bridge_cases(tokens)})
    times = measure(cases, args.repeats)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"\nmachine: {machine}; batch {args.batch_size} × {args.context}; median of {args.repeats}")
    result = report(times, tokens.numel())
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine, **result}, handle, indent=2)


if __name__ == "__main__":
    main()
