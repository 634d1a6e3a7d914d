"""The runtime monitor's overhead: greedy generation on SmolLM2-135M with three probes and one SAE latent
watching, against plain generation, the same prompts, alternating repeat by repeat in one process.

    python benchmarks/monitor_overhead.py [--sae /work/artifacts/sae-l9-4608] [--new-tokens 64]
        [--repeats 5] [--prompts 4] [--threads 1] [--json benchmarks/results/monitor_overhead.json]

The probes (difference of means, on 40 `cities` groups, thresholds on 64 control sentences) are trained
at blocks 6, 12 and 18 first; the SAE is `--sae` (a layer-9 TopK SAE), or, when that folder is absent, a
TopK SAE fitted for a few seconds on layer-9 activations of the corpus. Three timings per prompt and
repeat: plain `model.generate`, the monitor scoring every token but the last (exactly the forwards of plain
generation), and the monitor's default, which also runs the last token's one-token step to score it.
`min_new_tokens` keeps every continuation at `--new-tokens` tokens. Times are this process's CPU seconds
(`time.process_time`), which other jobs on a shared machine disturb far less than wall time.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import rama
from rama.atomic import write_text
from rama.hooks import HookedModel
from rama.monitor import LatentWatcher, Monitor, MonitorConfig, probe_watcher
from rama.probes import ProbeConfig, control_sentences, load_dataset, train_probe
from rama.sae import SAE, fit

PROMPTS = [
    "The history of the city begins with",
    "Q: What is the capital of Australia?\nA:",
    "Once upon a time, a young fox",
    "The main advantage of solar power is",
]
SITES = ["blocks.6.hook_resid_post", "blocks.12.hook_resid_post", "blocks.18.hook_resid_post"]


def quick_sae(model: HookedModel) -> SAE:
    """A small TopK SAE at layer 9, fitted in seconds, when no trained one is given."""
    site = "blocks.9.hook_resid_post"
    _, cache = model.run_with_cache(control_sentences(200, seed=1), names=site)
    keep = cache.attention_mask.bool()
    keep[:, 0] = False
    return fit(cache[site][keep], architecture="topk", d_sae=4608, k=32, total_tokens=8192, batch_size=256,
               metadata={"hook_name": site, "model_name": "smollm2-135m"})  # fmt: skip


def build_monitor(model: HookedModel, sae_dir: str) -> tuple[Monitor, dict[str, Any]]:
    cities = load_dataset("cities", limit=40)
    control = control_sentences(64)
    config = ProbeConfig(kind="diffmean", control=64, progress=False)
    probes = [probe_watcher(train_probe(model, cities, site, control, config), f"cities@{site.split('.')[1]}")
              for site in SITES]  # fmt: skip
    sae = SAE.load(sae_dir) if (Path(sae_dir) / "cfg.json").is_file() else quick_sae(model)
    watchers = [*probes, LatentWatcher("latent 0", sae, 0, 1.0)]
    setup = {"probes": [p.name for p in probes], "sae": sae_dir if (Path(sae_dir) / "cfg.json").is_file()
             else "fitted in the script", "d_sae": sae.cfg.d_sae, "sae_site": sae.cfg.hook_name}  # fmt: skip
    return Monitor(model, watchers, MonitorConfig(window=4, aggregate="max")), setup


def timed(work: Callable[[], Any]) -> float:
    """CPU seconds of this process (threads included): on a shared machine, wall time mostly measures
    the neighbours."""
    start = time.process_time()
    work()
    return time.process_time() - start


def measure(model: HookedModel, monitor: Monitor, new: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per case, summed over the prompts, for each repeat; cases alternate within a repeat."""
    cases: dict[str, Callable[[str], Any]] = {
        "plain generate": lambda p: model.generate(p, new, min_new_tokens=new),
        "monitor, last token unscored": lambda p: monitor.generate(
            p, new, min_new_tokens=new, score_last=False
        ),
        "monitor (default)": lambda p: monitor.generate(p, new, min_new_tokens=new),
    }
    for work in cases.values():  # warm-up
        work(PROMPTS[0])
    times: dict[str, list[float]] = {name: [] for name in cases}
    for repeat in range(repeats):
        order = list(cases) if repeat % 2 == 0 else list(reversed(cases))
        for name in order:
            work = cases[name]
            times[name].append(sum(timed(lambda p=p, w=work: w(p)) for p in PROMPTS))
        print(f"repeat {repeat + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in cases), flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sae", default="/work/artifacts/sae-l9-4608")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)"
    )
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="use the first N prompts")
    parser.add_argument("--json", default="benchmarks/results/monitor_overhead.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    del PROMPTS[args.prompts :]
    model = rama.load("smollm2-135m", device=args.device)
    monitor, setup = build_monitor(model, args.sae)
    with torch.no_grad():
        times = measure(model, monitor, args.new_tokens, args.repeats)
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians["plain generate"]
    ratios = {name: m / base for name, m in medians.items()}
    print(
        f"\n| case (SmolLM2-135M, {len(PROMPTS)} prompts × {args.new_tokens} new tokens) | seconds (median) | ÷ plain |"
    )
    print("|---|---|---|")
    for name, m in medians.items():
        print(f"| {name} | {m:.2f} | {ratios[name]:.3f} |")
    record = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"device {model.device}",
        "new_tokens": args.new_tokens, "prompts": PROMPTS, "repeats": args.repeats, "watchers": setup,
        "window": 4, "aggregate": "max", "clock": "process CPU time", "seconds": times, "median_seconds": medians, "ratio_to_plain": ratios,
        "target": "monitor (default) ÷ plain generate ≤ 1.05",
    }  # fmt: skip
    write_text(args.json, json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
