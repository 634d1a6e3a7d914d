"""`rama monitor`: generate while probes and SAE latents watch every token; print the generation with
flagged tokens marked and a per-watcher summary, and the events as JSON lines (`--events FILE` or `-`).

A probe keeps the alarm threshold it was calibrated with (`rama probe train`); an SAE latent takes the
threshold written after it (`SAE_DIR:ID=THRESHOLD`) or one set on `--control` ordinary sentences at
`--fpr`, token by token, with the same window aggregation as the run.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rama.cli.options import add_options, from_args, option
from rama.errors import ConfigError, InputError

EXAMPLE = (
    "example: rama monitor --probe cities-probe --feature sae-l9:1234 --max-new-tokens 24 --events - "
    "'The city of Tokyo is in'"
)


@dataclass(frozen=True)
class MonitorOptions:
    """What `rama monitor` needs beyond the window settings (`MonitorConfig`)."""

    prompt: str = option("", "the prompt to continue", positional=True)
    probe: list[str] = field(
        default_factory=list, metadata={"help": "a probe folder or its probe.json; repeatable"}
    )
    feature: list[str] = field(
        default_factory=list,
        metadata={
            "help": "an SAE latent, SAE_DIR:ID or SAE_DIR:ID=THRESHOLD (no threshold: calibrated); repeatable"
        },
    )
    model: str | None = option(
        None, "built-in name, local HF folder or hub id (default: the first probe's model)"
    )
    max_new_tokens: int = option(32, "tokens to generate")
    events: str | None = option(None, "write events as JSON lines to FILE, or to stdout with '-'")
    fpr: float = option(
        0.01, "token-level false-positive rate of calibrated latent thresholds on control text"
    )
    control: int = option(200, "control sentences from the corpus that calibrate latent thresholds")
    corpus: str | None = option(None, "corpus of the control sentences (default: the built-in corpus)")
    prepend_bos: bool = option(False, "put a BOS token before the prompt")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `monitor` command to `rama`."""
    from rama.monitor import MonitorConfig

    parser = subparsers.add_parser(
        "monitor", help="generate while probes and SAE latents watch every token", epilog=EXAMPLE
    )
    add_options(parser, MonitorOptions)
    add_options(parser, MonitorConfig)
    parser.set_defaults(handler=run_monitor)


def parse_feature(spec: str) -> tuple[str, int, float | None]:
    """`SAE_DIR:ID` or `SAE_DIR:ID=THRESHOLD` -> (folder, latent id, threshold or None)."""
    folder, _, rest = spec.rpartition(":")
    latent, _, threshold = rest.partition("=")
    try:
        return folder, int(latent), float(threshold) if threshold else None
    except ValueError:
        raise ConfigError(
            f"--feature {spec!r} is not SAE_DIR:ID or SAE_DIR:ID=THRESHOLD (e.g. sae-l9:1234 or sae-l9:1234=2.5)"
        ) from None


def watchers_from(options: MonitorOptions) -> tuple[list[Any], str | None]:
    """(watchers, the first probe's model name) from the --probe and --feature options."""
    from rama.monitor import LatentWatcher, probe_watcher
    from rama.probes import load_probe
    from rama.sae import SAE

    if not options.probe and not options.feature:
        raise ConfigError(f"give at least one --probe or --feature to watch; {EXAMPLE}")
    watchers: list[Any] = []
    model_name = None
    for path in options.probe:
        trained = load_probe(path)
        model_name = model_name or trained.meta.get("model")
        where = Path(path).parent if Path(path).name == "probe.json" else Path(path)
        watchers.append(probe_watcher(trained, unique(where.resolve().name, watchers)))
    saes: dict[str, Any] = {}
    for spec in options.feature:
        folder, latent, threshold = parse_feature(spec)
        if not (Path(folder) / "cfg.json").is_file():
            raise InputError(f"--feature {spec!r}: {folder!r} is not an SAE folder (it has no cfg.json)")
        if folder not in saes:
            saes[folder] = SAE.load(folder)
        sae = saes[folder]
        name = unique(f"{Path(folder).resolve().name}:{latent}", watchers)
        watchers.append(LatentWatcher(name, sae, latent, threshold))
    return watchers, model_name


def unique(name: str, watchers: list[Any]) -> str:
    taken = {w.name for w in watchers}
    return (
        name
        if name not in taken
        else next(f"{name}#{i}" for i in range(2, len(taken) + 2) if f"{name}#{i}" not in taken)
    )


def run_monitor(args: argparse.Namespace) -> int:
    import rama
    from rama.monitor import JsonLinesFile, Monitor, MonitorConfig, calibrate
    from rama.probes import control_sentences

    options, config = from_args(MonitorOptions, args), from_args(MonitorConfig, args)
    if not options.prompt.strip():
        raise ConfigError(f"the prompt is empty; {EXAMPLE}")
    watchers, probe_model = watchers_from(options)
    model_name = options.model or probe_model
    if not model_name:
        raise ConfigError("--model is required when no probe names its model")
    model = rama.load(model_name)
    monitor = Monitor(model, watchers, config)
    if monitor.uncalibrated():
        monitor = calibrate(monitor, control_sentences(options.control, 0, options.corpus), options.fpr)
    human = sys.stderr if options.events == "-" else sys.stdout
    if options.events:
        with JsonLinesFile(options.events) as sink:
            result = monitor.generate(
                options.prompt, options.max_new_tokens, sink=sink, prepend_bos=options.prepend_bos
            )
    else:
        result = monitor.generate(options.prompt, options.max_new_tokens, prepend_bos=options.prepend_bos)
    print_result(result, human)
    return 0


def print_result(result: Any, out: TextIO) -> None:
    """The generation with flagged tokens between [[ ]], then one summary line per watcher."""
    print(result.marked_text(), file=out)
    print(f"\n[[ ]] marks a token where a watcher's {result.config.aggregate} over the last "
          f"{result.config.window} token(s) is above its threshold", file=out)  # fmt: skip
    width = max(len(name) for name in result.watchers)
    for row in result.summary():
        peak = (
            ""
            if row["max_at"] is None
            else f"; max {row['max_score']:.4f} at token {row['max_at']} {row['max_token']!r}"
        )
        print(
            f"{row['watcher']:<{width}}  threshold {row['threshold']:.4f}  events {row['events']}{peak}",
            file=out,
        )
