"""Peak memory of `rama sae train --stream` as the token budget grows: it should stay flat.

    python benchmarks/sae_memory.py [--tokens 1000000 10000000] [--site blocks.0.hook_resid_post]

Each budget runs in a fresh process (the CLI, as a user runs it) and its peak resident memory is read
from the kernel (`ru_maxrss` of the finished child). The default site is early in the model so that ten
million tokens of harvest fit in a CPU session; the streaming store is the same for every site.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rama.atomic import write_text

# A fresh parent per run: RUSAGE_CHILDREN's ru_maxrss is the largest child it ever waited for.
WRAPPER = """
import json, resource, subprocess, sys
subprocess.run(json.loads(sys.argv[1]), check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
CLI = "import sys; from rama.cli.main import main; sys.exit(main())"


def peak_rss_mib(tokens: int, site: str, width: int, work: Path, corpus: str | None) -> tuple[float, float]:
    """Run one training in a child process; (peak RSS in MiB, wall seconds)."""
    command = [
        sys.executable, "-c", CLI, "sae", "train", "--site", site, "--width", str(width), "--k", "32",
        "--tokens", str(tokens), "--eval-tokens", "4096", "--out", str(work / f"sae-{tokens}"),
    ]  # fmt: skip
    command += ["--corpus", corpus] if corpus else []
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, json.dumps(command)], check=True, capture_output=True, text=True
    )
    return int(done.stdout.split()[-1]) / 1024, time.perf_counter() - start  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--site", default="blocks.0.hook_resid_post")
    parser.add_argument("--width", type=int, default=4608)
    parser.add_argument(
        "--corpus", default=None, help="the built-in corpus holds about 6 M tokens; 10 M needs a bigger one"
    )
    parser.add_argument("--results", default="benchmarks/results/sae_memory.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rama-memory-") as folder:
        for tokens in args.tokens:
            peak, seconds = peak_rss_mib(tokens, args.site, args.width, Path(folder), args.corpus)
            rows.append({"tokens": tokens, "peak_rss_mib": round(peak, 1), "seconds": round(seconds, 1)})
            print(f"| {tokens:,} | {peak:.0f} MiB | {seconds:.0f} s |", flush=True)
    record = {
        "machine": platform.machine(),
        "site": args.site,
        "width": args.width,
        "corpus": args.corpus,
        "runs": rows,
    }
    write_text(Path(args.results), json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
