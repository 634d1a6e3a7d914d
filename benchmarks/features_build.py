"""What a feature build costs: the analysis pass against harvesting + encoding alone, against
SAEDashboard's runner, its peak memory as the token count grows, the dashboard's feature-page time on a
store of ≥ 16,000 latents, and the store's size per latent.

    python benchmarks/features_build.py --sae /work/artifacts/sae-l9-4608 [--tokens 32768] [--repeats 2]
        [--memory-tokens 65536 262144] [--page-latents 16384] [--page-tokens 32768] [--requests 200]
        [--saedash-python /work/venvs/saedash/bin/python]
        [--skip speed memory saedash pages]

Speed: the same tokens (the built-in corpus, 8 × 128 per batch) go through (a) the model to the SAE's site
and the block's `mlp.hook_post`, then `sae.encode`, nothing else, and (b) `rama.features.analyse`, which does
(a) and keeps every summary; the two alternate `--repeats` times in one process. Memory: `rama features build`
in a fresh process per token count, peak resident memory from the kernel. Pages: a 16,384-latent TopK SAE
trained briefly on the page tokens' activations (so that most latents fire and pages hold their full example
rows), a store built from it, served by uvicorn in a child process, `--requests` GETs of `/feature/{id}` for
ids drawn uniformly among the latents that fired. SAEDashboard: its runner (every latent in one feature batch)
in another venv (`features_build_saedash.py`) on the same `--tokens` rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

import rama
from rama.activations import HarvestConfig, batches_with_activations, harvest
from rama.atomic import write_text
from rama.data import PackConfig, token_batches
from rama.features import BuildConfig, FeatureStore, analyse, build
from rama.features.analysis import neuron_site
from rama.hooks import HookedModel
from rama.sae import SAE, fit

WRAPPER = """
import json, resource, subprocess, sys
subprocess.run(json.loads(sys.argv[1]), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
CLI = "import sys; from rama.cli.main import main; sys.exit(main())"
SERVER = "import sys, uvicorn; from rama.web.app import create_app; uvicorn.run(create_app(sys.argv[1]), port=int(sys.argv[2]), log_level='warning')"


@dataclasses.dataclass(frozen=True)
class Options:
    """The script's options (each field is a --flag)."""

    sae: str = "/work/artifacts/sae-l9-4608"
    tokens: int = 32_768
    repeats: int = 2
    memory_tokens: tuple[int, ...] = (65_536, 262_144)
    page_latents: int = 16_384
    page_tokens: int = 32_768
    requests: int = 200
    saedash_python: str = "/work/venvs/saedash/bin/python"
    skip: tuple[str, ...] = ()
    results: str = "benchmarks/results/features_build.json"


def parse() -> Options:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for spec in dataclasses.fields(Options):
        flag, default = "--" + spec.name.replace("_", "-"), spec.default
        if isinstance(default, tuple):
            kind = int if spec.name != "skip" else str
            parser.add_argument(flag, type=kind, nargs="*", default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    values = vars(parser.parse_args())
    return Options(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def encode_only(model: HookedModel, sae: SAE, tokens: int) -> float:
    """Seconds to harvest the SAE's site and the neuron site and encode, keeping nothing."""
    sites = [sae.cfg.hook_name] + [s for s in [neuron_site(model, sae)] if s]
    start = time.perf_counter()
    for _, acts in batches_with_activations(model, sites, HarvestConfig(tokens=tokens, progress=False)):
        with torch.no_grad():
            sae.encode(acts[sae.cfg.hook_name].float())  # [rows, pos, d_sae]
    return time.perf_counter() - start


def speed(model: HookedModel, sae: SAE, options: Options) -> dict[str, float]:
    """Tokens/s of harvest + encode and of the full analysis pass, alternating in one process."""
    config = BuildConfig(tokens=options.tokens, progress=False)
    base, full = [], []
    for _ in range(options.repeats):
        base.append(encode_only(model, sae, options.tokens))
        start = time.perf_counter()
        analyse(sae, model, options.tokens, config=config)
        full.append(time.perf_counter() - start)
    row = {"harvest + encode": options.tokens / min(base), "analysis pass": options.tokens / min(full)}
    row["pass ÷ harvest+encode (time)"] = min(full) / min(base)
    return row


def peak_memory(options: Options, work: Path) -> list[dict[str, float]]:
    """`rama features build` in a fresh process per token count: peak RSS, wall time, store size."""
    rows = []
    for tokens in options.memory_tokens:
        out = work / f"store-{tokens}.db"
        command = [sys.executable, "-c", CLI, "features", "build", options.sae, "--tokens", str(tokens),
                   "--out", str(out), "--no-progress"]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", WRAPPER, json.dumps(command)], check=True,
                              capture_output=True, text=True)  # fmt: skip
        seconds = time.perf_counter() - start
        with FeatureStore(out) as store:
            units = int(store.meta["d_sae"]) + int(store.meta.get("n_neurons") or 0)
            latents = int(store.meta["d_sae"])
        size = out.stat().st_size
        rows.append({"tokens": tokens, "peak_rss_mib": int(done.stdout.split()[-1]) / 1024, "seconds": seconds,
                     "store_mib": size / 2**20, "bytes_per_latent": size / latents, "bytes_per_unit": size / units})  # fmt: skip
        print(f"| {tokens:,} | {rows[-1]['peak_rss_mib']:,.0f} MiB | {seconds:,.0f} s | {size / 2**20:.1f} MiB "
              f"| {size / latents / 1024:.1f} KiB |", flush=True)  # fmt: skip
    return rows


def page_store(model: HookedModel, site: str, options: Options, out: Path) -> Path:
    """A store for a briefly trained `page_latents`-wide TopK SAE over `page_tokens` tokens."""
    acts = harvest(model, [site], HarvestConfig(tokens=options.page_tokens, progress=False))[site]
    sae = fit(acts, architecture="topk", d_sae=options.page_latents, k=32, total_tokens=8 * len(acts),
              batch_size=1024, progress=False, metadata={"hook_name": site, "model_name": model.cfg.name})  # fmt: skip
    config = BuildConfig(tokens=options.page_tokens, progress=False)
    return build(sae, model, options.page_tokens, out=out, config=config, replace=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def page_times(store: Path, options: Options) -> dict[str, float]:
    """p50 / p95 / max milliseconds of `/feature/{id}` from a uvicorn child, ids among firing latents."""
    with FeatureStore(store) as db:
        firing = [u["id"] for u in db.units_page("latent", "id", False, 0, 10**7) if u["count"] > 0]
        latents = int(db.meta["d_sae"])
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(store), str(port)])
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(300):  # wait for start-up
                try:
                    client.get("/")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            ids = torch.tensor(firing)[torch.randint(len(firing), (options.requests,),
                                                     generator=torch.Generator().manual_seed(0))]  # fmt: skip
            times = []
            for id in ids.tolist():
                start = time.perf_counter()
                client.get(f"/feature/{id}").raise_for_status()
                times.append((time.perf_counter() - start) * 1000)
    finally:
        server.terminate()
        server.wait()
    q = torch.tensor(times).quantile(torch.tensor([0.5, 0.95])).tolist()
    return {"latents": latents, "firing": len(firing), "store_mib": store.stat().st_size / 2**20,
            "p50_ms": q[0], "p95_ms": q[1], "max_ms": max(times)}  # fmt: skip


def run_saedash(model: HookedModel, options: Options, work: Path) -> dict[str, object]:
    """SAEDashboard's runner on the same SAE folder (rama writes SAELens's layout), the same model weights
    and the same token rows, in its own venv (`features_build_saedash.py`); its tokens/s, or why not."""
    python = Path(options.saedash_python)
    if not python.is_file():
        return {"ran": False, "why": f"no venv with sae-dashboard at {python}"}
    pack = PackConfig(context_size=128, seed=0, split="train")  # what HarvestConfig's defaults read
    rows = torch.cat(
        list(token_batches(model.tokenizer, None, batch_size=8, config=pack, max_tokens=options.tokens))
    )
    torch.save(rows, work / "tokens.pt")
    model.hf.save_pretrained(work / "hf")
    model.tokenizer.save_pretrained(work / "hf")
    script = Path(__file__).with_name("features_build_saedash.py")
    command = [str(python), str(script), options.sae, str(work / "hf"), str(work / "tokens.pt")]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return {"ran": False, "why": lines[-1] if lines else f"exit {done.returncode}"}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"ran": True, **result, "tokens/s": result["tokens"] / result["seconds"]}


def machine() -> str:
    return (f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"{time.strftime('%Y-%m-%d')}")  # fmt: skip


def main() -> None:
    options = parse()
    record: dict[str, object] = {"machine": machine(), "options": dataclasses.asdict(options)}
    model = rama.load("smollm2-135m")
    sae = SAE.load(options.sae).eval()
    print(
        f"machine: {record['machine']}; SAE {options.sae} ({sae.cfg.d_sae:,} latents at {sae.cfg.hook_name})"
    )
    with tempfile.TemporaryDirectory(prefix="rama-features-bench-") as folder:
        work = Path(folder)
        if "speed" not in options.skip:
            record["speed"] = speed(model, sae, options)
            print(f"\n| work ({options.tokens:,} tokens) | tokens/s |\n|---|---|")
            for name, value in record["speed"].items():  # type: ignore[attr-defined]
                print(f"| {name} | {value:,.3f} |" if "÷" in name else f"| {name} | {value:,.0f} |")
        if "saedash" not in options.skip:
            record["saedash"] = run_saedash(model, options, work)
            print(f"\nsae-dashboard: {record['saedash']}")
        if "memory" not in options.skip:
            print("\n| tokens | peak RSS | wall | store | store per latent |\n|---|---|---|---|---|")
            record["memory"] = peak_memory(options, work)
        if "pages" not in options.skip:
            store = page_store(model, sae.cfg.hook_name, options, work / "pages.db")
            record["pages"] = pages = page_times(store, options)
            print(f"\nfeature page over {options.requests} requests, {pages['latents']:,} latents "
                  f"({pages['firing']:,} fired), {pages['store_mib']:.0f} MiB: p50 {pages['p50_ms']:.1f} ms, "
                  f"p95 {pages['p95_ms']:.1f} ms, max {pages['max_ms']:.1f} ms")  # fmt: skip
    write_text(Path(options.results), json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
