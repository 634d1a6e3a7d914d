"""Train SmolLM2 SAEs on a remote GPU machine that can take only a small upload (here 64 MiB).

The whole GGUF is 98 MB, but an SAE at layer L needs only blocks 0..L: `pack` writes a GGUF with just
those blocks (their quantized bytes copied unchanged) and checks that it dequantizes to the cached
model's weights bit for bit. `train` (on the GPU machine) converts it, harvests every training token
of the built-in corpus at the asked sites and trains one SAE per site for many epochs over them.
`unpack` (here) reassembles the SAEs and evaluates each on the full model (CE loss recovered needs
all 30 layers), writing metrics.json as `rama sae train` does.

    python examples/gpu_sae.py pack --blocks 10 --out .device    # --part-mib 30: pieces for two uploads
    # there (run 2026-11-27 on an H200: harvest 30 s, 100 M tokens in 116 s; the budget did not bind):
    #   python3 examples/gpu_sae.py train --packed .device --sites 9 --tokens 100000000 --budget-s 160 --out $OUT
    python examples/gpu_sae.py unpack DEVICE_OUT --out /tmp/sae
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import math
import shutil
import tarfile
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import rama
from rama.activations import HarvestConfig, harvest
from rama.data.corpus import builtin_corpus
from rama.models.loading import BUILTIN_MODELS, convert_gguf, ensure_builtin, locate_package_member
from rama.models.sites import block_site
from rama.sae import SAE, TrainConfig, fit
from rama.sae.runner import sae_metadata, save_evaluated

PART_BYTES = 15 * 2**20  # files come back from the machine in pieces of at most 16 MiB


def truncate_gguf(source: Path, dest: Path, blocks: int) -> None:
    """A copy of `source` holding blocks 0..blocks-1 (and the embedding, final norm and tokenizer)."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    reader = GGUFReader(source)
    arch = str(reader.fields["general.architecture"].contents())
    writer = GGUFWriter(dest, arch)  # writes general.architecture itself
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = blocks if key == f"{arch}.block_count" else field.contents()
        kind = field.types[0]
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, kind, sub_type=sub)
    for tensor in reader.tensors:
        if tensor.name.startswith("blk.") and int(tensor.name.split(".")[1]) >= blocks:
            continue
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)  # bytes unchanged
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def check_truncated(gguf_file: Path, full_model_dir: Path) -> int:
    """Dequantize the truncated GGUF and compare each weight with the cached full model's, bit for bit."""
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as folder:
        convert_gguf(gguf_file, Path(folder))
        small = load_file(str(Path(folder) / "model.safetensors"))
    full = load_file(str(full_model_dir / "model.safetensors"))
    for name, value in small.items():
        if not torch.equal(value, full[name]):
            raise AssertionError(f"{name} differs from the full model's")
    return len(small)


def pack(blocks: int, out: Path, part_mib: float) -> None:
    """Writes `model.gguf.xz.NNN` pieces of at most `part_mib` each: more blocks than one upload holds
    travel in two calls (the first copies its pieces to a folder that the second names in `--packed`)."""
    spec = BUILTIN_MODELS["smollm2-135m"]
    out.mkdir(parents=True, exist_ok=True)
    gguf_file = out / "model.gguf"
    truncate_gguf(locate_package_member(spec), gguf_file, blocks)
    checked = check_truncated(gguf_file, ensure_builtin(spec))
    weights = lzma.compress(gguf_file.read_bytes(), preset=6)  # quantized weights: only ~9% smaller
    gguf_file.unlink()
    size = int(part_mib * 2**20)
    for stale in out.glob("model.gguf.xz.*"):  # an earlier pack's pieces would join this one's in `train`
        stale.unlink()
    for index in range(math.ceil(len(weights) / size)):
        (out / f"model.gguf.xz.{index:03d}").write_bytes(weights[index * size : (index + 1) * size])
    with (
        open(builtin_corpus(), "rb") as text,
        lzma.open(out / "documents.jsonl.xz", "wb", preset=6) as packed,
    ):
        shutil.copyfileobj(text, packed)
    sizes = {p.name: p.stat().st_size / 2**20 for p in out.iterdir()}
    print(f"{checked} tensors equal the cached model's; files (MiB): {sizes}")


def train(args: argparse.Namespace) -> None:
    folders, out, device = [Path(f) for f in args.packed.split(",")], args.out, args.device
    sites = [int(s) for s in args.sites.split(",")]
    work = Path(tempfile.mkdtemp())
    pieces = sorted((p for f in folders for p in f.glob("model.gguf.xz.*")), key=lambda p: p.name)
    corpora = [f for f in folders if (f / "documents.jsonl.xz").exists()]
    if not pieces or not corpora:
        raise SystemExit(
            f"--packed {args.packed}: no model.gguf.xz.NNN pieces or no documents.jsonl.xz; run pack"
        )
    (work / "model.gguf").write_bytes(lzma.decompress(b"".join(p.read_bytes() for p in pieces)))
    convert_gguf(work / "model.gguf", work / "model")
    with (
        lzma.open(corpora[0] / "documents.jsonl.xz", "rb") as source,
        open(work / "documents.jsonl", "wb") as dest,
    ):
        shutil.copyfileobj(source, dest)
    model = rama.load(work / "model", device=device)
    names = [block_site(layer, "hook_resid_post") for layer in sites]
    harvest_config = HarvestConfig(tokens=args.harvest_tokens, batch_size=64, seed=0)
    start = time.perf_counter()
    acts = harvest(model, names, harvest_config, corpus=work / "documents.jsonl")
    harvest_s = time.perf_counter() - start
    del model
    log: dict[str, Any] = {"harvested_tokens": int(acts[names[0]].shape[0]), "harvest_seconds": harvest_s}
    print(json.dumps(log), flush=True)
    for name in names:
        config = TrainConfig.create(
            d_sae=args.width,
            k=args.k,
            total_tokens=args.tokens,
            device=device,
            log_every=500,
            autocast=args.autocast,
        )
        steps_per_s = probe_speed(acts[name], config)
        affordable = int(steps_per_s * args.budget_s / len(names)) * config.batch_size
        config.total_tokens = min(args.tokens, affordable)
        meta = sae_metadata("smollm2-135m", name, None, harvest_config)
        start = time.perf_counter()
        sae = fit(acts[name], config=config, metadata=meta)
        record = {"site": name, "autocast": args.autocast, "tokens": config.total_steps() * config.batch_size,
                  "train_seconds": time.perf_counter() - start, "probe_steps_per_s": steps_per_s}  # fmt: skip
        folder = work / f"sae-{name.split('.')[1]}"
        sae.save(folder, sparsity=torch.zeros(args.width))
        (folder / "device.json").write_text(json.dumps({**log, **record}, indent=2))
        split_tar(folder, out / folder.name)
        print(json.dumps(record), flush=True)


def probe_speed(acts: torch.Tensor, config: TrainConfig) -> float:
    """Training steps per second on this machine, from a throwaway 300-step run."""
    probe = replace(config, total_tokens=300 * config.batch_size, progress=False)
    fit(acts, config=replace(probe, total_tokens=20 * config.batch_size))  # warm-up
    sync = torch.cuda.synchronize if config.device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    fit(acts, config=probe)
    sync()
    return 300 / (time.perf_counter() - start)


def split_tar(folder: Path, prefix: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(folder, arcname=".")
    data = buffer.getvalue()
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for index in range(math.ceil(len(data) / PART_BYTES)):
        Path(f"{prefix}.tar.{index}").write_bytes(data[index * PART_BYTES : (index + 1) * PART_BYTES])


def unpack(returned: Path, out: Path) -> None:
    model = rama.load("smollm2-135m")
    for first in sorted(returned.glob("*.tar.0")):
        name = first.name.removesuffix(".tar.0")
        parts = sorted(returned.glob(f"{name}.tar.*"), key=lambda p: int(p.suffix[1:]))
        folder = out / name
        with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in parts))) as archive:
            archive.extractall(folder, filter="data")
        device = json.loads((folder / "device.json").read_text())
        recorded = {k: device[k] for k in ("tokens", "harvested_tokens", "harvest_seconds", "train_seconds")}
        config = HarvestConfig(tokens=16_384, split="test", progress=False)
        metrics = save_evaluated(SAE.load(folder), model, folder, config, None, recorded)
        print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["pack", "train", "unpack"])
    parser.add_argument("returned", nargs="?", type=Path, help="unpack: the folder the machine sent back")
    parser.add_argument("--blocks", type=int, default=10, help="pack: blocks to keep (layer L needs L+1)")
    parser.add_argument("--part-mib", type=float, default=60.0, help="pack: largest piece of the GGUF")
    parser.add_argument(
        "--packed", default=".device", help="train: what pack wrote (comma-separated folders)"
    )
    parser.add_argument("--sites", default="9", help="train: comma-separated layers (resid_post)")
    parser.add_argument("--tokens", type=int, default=100_000_000, help="train: tokens per SAE (epochs)")
    parser.add_argument("--width", type=int, default=4608)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--harvest-tokens", type=int, default=10**10, help="train: default every one")
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--autocast", default="float32", help="train: float32 or bfloat16 (TrainConfig.autocast)"
    )
    parser.add_argument("--budget-s", type=float, default=360.0, help="train: seconds for all SAEs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.blocks, args.out, args.part_mib)
    elif args.command == "train":
        train(args)
    else:
        unpack(args.returned, args.out)


if __name__ == "__main__":
    main()
