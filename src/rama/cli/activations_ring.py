"""`rama activations produce`: one harvest worker of a producer–consumer activation ring.

Start N of them (`--producer 0` … `--producer N-1`, each loading the model) on one `--ring` folder;
trainers read the ring while they write (docs/scale-producer-consumer.md). Every setting that the
ring records is checked against it before the model loads, and again (with the weights) after.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from rama.cli.options import add_options, from_args, option
from rama.errors import ConfigError


@dataclass(frozen=True)
class ProduceOptions:
    """A producer's options: the ring, its place in it, the model, the sites and the harvest."""

    ring: str | None = option(None, "the ring folder every producer and consumer shares (required)")
    producer: int = option(0, "this producer's index, 0 .. --producers - 1")
    producers: int = option(1, "how many producers share the ring")
    consumers: int = option(1, "how many consumers read the ring (a shard goes once all have read it)")
    capacity: int = option(8, "unread shards the ring may hold on disk")
    batches_per_shard: int = option(32, "model batches per shard (32 × 8 × 128 = 32,768 tokens)")
    model: str = option("smollm2-135m", "built-in name, local HF folder or hub id")
    site: list[str] = field(
        default_factory=lambda: ["blocks.9.hook_resid_post"],
        metadata={"help": "a site to harvest (repeat for several; default: blocks.9.hook_resid_post)"},
    )
    corpus: str | None = option(None, "corpus file/folder (default: the built-in English corpus)")
    tokens: int = option(100_000, "tokens the producers harvest together")
    batch_size: int = option(8, "contexts per model batch")
    context_size: int = option(128, "tokens per context")
    seed: int = option(0, "the corpus shuffle seed")
    split: str = option("train", "train, test or all")
    exclude_special_tokens: bool = option(True, "leave BOS/EOS/padding positions out")
    dtype: str = option("float32", "float32, float16 or bfloat16 shards")
    device: str = option("cpu", "where the model runs")
    progress: bool = option(True, "show a progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("activations", help="harvest activations for trainers to read")
    commands = parser.add_subparsers(dest="activations_command", metavar="ACTIVATIONS_COMMAND")
    produce_parser = commands.add_parser(
        "produce",
        help="one harvest worker of a bounded on-disk ring that trainers consume",
        epilog="example: rama activations produce --ring acts --producer 0 --producers 2 "
        "--site blocks.9.hook_resid_post --tokens 2000000",
    )
    add_options(produce_parser, ProduceOptions)
    produce_parser.set_defaults(handler=lambda ns: run_produce(from_args(ProduceOptions, ns)))


def run_produce(options: ProduceOptions) -> int:
    from rama import load
    from rama.activations import HarvestConfig, RingLayout, produce
    from rama.activations.ring import check_ring, read_json

    if options.ring is None:
        raise ConfigError("--ring is required: the folder the producers and consumers share")
    harvest = {f.name: getattr(options, f.name) for f in dataclasses.fields(HarvestConfig)}
    config = HarvestConfig(**harvest)
    layout = RingLayout(options.producers, options.consumers, options.capacity, options.batches_per_shard)
    if not 0 <= options.producer < layout.producers:
        raise ConfigError(f"--producer must be in 0..{layout.producers - 1}, not {options.producer}")
    manifest = read_json(Path(options.ring) / "ring.json")
    if manifest is not None:  # what can be compared before minutes of loading
        checked = {k: v for k, v in harvest.items() if k != "progress"}
        expected = {"harvest": checked, "corpus": options.corpus, **dataclasses.asdict(layout)}
        check_ring(manifest, expected, Path(options.ring))
    model = load(options.model, device=options.device)
    shards = produce(model, options.site, options.ring, config, layout, options.producer, options.corpus)
    print(f"producer {options.producer}: {shards} shards written to {options.ring}")
    return 0
