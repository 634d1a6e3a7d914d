"""`rama sae train` and `rama sae eval`: text to a trained, evaluated SAE, and metrics of a saved one.

`rama sae train` speaks the library's vocabulary: its training options are `TrainConfig`'s fields
and the registered architectures' settings (same names, defaults and help), so `--d-sae` is
`TrainConfig.d_sae`, `--k` is `TopKConfig.k`. The older spellings (`--arch`, `--width`, `--tokens`,
`--skip`, `--l1`, `--l0`) are aliases. Every setting is checked before the model loads.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rama.cli.options import add_field, add_options, from_args, option
from rama.cli.sae_scaling import register_scaling
from rama.errors import ConfigError
from rama.sae.base import REGISTRY, sae_class
from rama.sae.train_config import TrainConfig

# TrainConfig fields that are not options: the architecture's settings come one by one, the
# checkpoint goes into --out, and extra SAE metadata is for library callers
NOT_OPTIONS = ("arch", "sae_extra", "checkpoint_dir")


@dataclass(frozen=True)
class SAERunOptions:
    """What a `rama sae train` run needs besides its TrainConfig: model, sites, data and output."""

    model: str = option("smollm2-135m", "built-in name, local HF folder or hub id")
    site: str = option(
        "blocks.9.hook_resid_post",
        "the site the SAE reads; several, comma-separated, train one SAE each into --out/<site>",
    )
    site_out: str | None = option(None, "train a transcoder that predicts this site instead")
    harvest_tokens: int | None = option(
        None,
        "tokens to harvest (default: --total-tokens; fewer means epochs, over activations held in memory "
        "or in --activation-cache)",
    )
    eval_tokens: int = option(
        16_384, "held-out tokens for metrics.json (0: no evaluation; `rama sae eval` runs it later)"
    )
    corpus: str | None = option(None, "corpus file/folder (default: the built-in English corpus)")
    stream: bool | None = option(
        None,
        "--stream harvests in a background thread into a shuffle buffer (flat memory); --no-stream "
        "harvests everything first, in memory (default: stream, unless --harvest-tokens < --total-tokens)",
    )
    activation_cache: str | None = option(
        None,
        "folder of harvested activations: filled on the first run (sharded safetensors, resumable), "
        "reused by later runs with the same model, corpus, seed and --harvest-tokens",
    )
    activation_ring: str | None = option(
        None,
        "folder of an activation ring that `rama activations produce` processes fill: train on it as one "
        "consumer, with the ring's harvest settings and corpus (no --stream, --activation-cache, --harvest-tokens)",
    )
    ring_consumer: int = option(
        0, "this trainer's consumer index in --activation-ring (0 .. --consumers - 1)"
    )
    out: str = option("rama-sae", "output folder (must not hold a finished run; a killed run resumes)")
    distribute_sites: bool = option(
        False,
        "under torchrun, give each rank whole sites (one shared model pass, each site's activations "
        "gathered to its rank) instead of training every site data parallel on all ranks",
    )

    def sites(self) -> list[str]:
        """The --site value as a list (one site: itself)."""
        return [part.strip() for part in self.site.split(",")]

    def outputs(self) -> list[Path]:
        """Each site's output folder: --out itself for one site, else --out/<site>."""
        sites = self.sites()
        return [Path(self.out)] if len(sites) == 1 else [Path(self.out) / site for site in sites]


@dataclass(frozen=True)
class SAEEvalOptions:
    folder: str = option(
        "rama-sae", "a saved SAE folder (rama, SAELens, sparsify, Gemma Scope …)", positional=True
    )
    model: str | None = option(None, "model (default: the model named in the SAE's cfg)")
    site: str | None = option(None, "site (default: the SAE's hook_name)")
    eval_tokens: int = option(16_384, "held-out tokens")
    corpus: str | None = option(None, "corpus file/folder (default: the built-in English corpus)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sae", help="train and evaluate sparse autoencoders and transcoders")
    commands = parser.add_subparsers(dest="sae_command", metavar="SAE_COMMAND")
    train_parser = commands.add_parser(
        "train",
        help="harvest activations, train an SAE, write it with metrics.json",
        epilog="example: rama sae train --site blocks.9.hook_resid_post --architecture topk --d-sae 4608 "
        "--k 32 --total-tokens 2000000 --out sae-l9",
    )
    add_train_options(train_parser)
    train_parser.set_defaults(handler=run_train)
    eval_parser = commands.add_parser(
        "eval", help="metrics of a saved SAE on held-out text", epilog="example: rama sae eval sae-l9"
    )
    add_options(eval_parser, SAEEvalOptions)
    eval_parser.set_defaults(handler=lambda ns: run_eval(from_args(SAEEvalOptions, ns)))
    register_scaling(commands)


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """The run's options, TrainConfig's fields and every architecture's settings."""
    add_options(parser, SAERunOptions)
    settings = parser.add_argument_group("training (TrainConfig)")
    add_options(settings, TrainConfig, skip=NOT_OPTIONS)  # type: ignore[arg-type]
    architecture = parser.add_argument_group(
        "architecture settings (each applies to the architectures that have it; left out: their default)"
    )
    for field, hint in architecture_settings():
        add_field(architecture, field, hint, default=None)  # type: ignore[arg-type]


def architecture_settings() -> list[tuple[dataclasses.Field[Any], Any]]:
    """Each registered architecture's settings, once per name (TopK, BatchTopK, Matryoshka share k)."""
    seen: dict[str, tuple[dataclasses.Field[Any], Any]] = {}
    for cls in REGISTRY.values():
        hints = typing.get_type_hints(cls.config_class)
        for field in dataclasses.fields(cls.config_class):
            if field.name not in seen:
                seen[field.name] = (with_list_parser(field, hints[field.name]), hints[field.name])
    return list(seen.values())


def with_list_parser(field: dataclasses.Field[Any], hint: Any) -> dataclasses.Field[Any]:
    """A list-of-ints setting (matryoshka_widths) as one comma-separated value: 72,288,1152,4608."""
    if int not in typing.get_args(next(iter(typing.get_args(hint)), None)):
        return field
    parsed = copy.copy(field)
    parsed.metadata = types.MappingProxyType({**field.metadata, "comma": True})
    return parsed


def train_config_from_args(namespace: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the options describe, checked; a setting given for an architecture that
    does not have it is refused (it would be silently ignored otherwise)."""
    values = {
        f.name: getattr(namespace, f.name)
        for f in dataclasses.fields(TrainConfig)
        if f.name not in NOT_OPTIONS
    }
    own = {f.name for f in dataclasses.fields(sae_class(values["architecture"]).config_class)}
    given = {f.name: getattr(namespace, f.name) for f, _ in architecture_settings()}
    given = {name: value for name, value in given.items() if value is not None}
    foreign = sorted(set(given) - own)
    if foreign:
        flags = ", ".join("--" + name.replace("_", "-") for name in foreign)
        theirs = ", ".join("--" + name.replace("_", "-") for name in sorted(own)) or "none"
        raise ConfigError(
            f"{flags}: not a setting of the {values['architecture']!r} architecture (its settings: {theirs})"
        )
    return TrainConfig.create(**values, **given)


def check_run(options: SAERunOptions, config: TrainConfig) -> None:
    """What can be checked of a run before the model loads: counts, the device, the output folder."""
    from rama.sae.runner import check_output
    from rama.sae.training import check_device

    if options.eval_tokens < 0:
        raise ConfigError(
            f"--eval-tokens must be a number of held-out tokens (0 skips the evaluation); got {options.eval_tokens}"
        )
    if options.harvest_tokens is not None and options.harvest_tokens < config.batch_size:
        raise ConfigError(
            f"--harvest-tokens must be at least one batch (--batch-size {config.batch_size:,}); "
            f"got {options.harvest_tokens:,}"
        )
    try:
        check_device(config.device)
    except ConfigError as error:
        raise ConfigError(f"--device: {error}") from None
    check_sites(options, config)
    if options.activation_ring is not None:
        check_ring_options(options, config)
    for out in options.outputs():
        check_output(out)


def check_ring_options(options: SAERunOptions, config: TrainConfig) -> None:
    """--activation-ring: one site, none of the other data options (the runner's rule, in CLI names)."""
    from rama.sae.runner import Job, check_ring_run

    given = {
        "--stream/--no-stream": options.stream is not None,
        "--activation-cache": options.activation_cache is not None,
        "--harvest-tokens": options.harvest_tokens is not None,
        "--distribute-sites": options.distribute_sites,
    }
    jobs = [Job(site, out, config) for site, out in zip(options.sites(), options.outputs(), strict=True)]
    check_ring_run(jobs, given)


def check_sites(options: SAERunOptions, config: TrainConfig) -> None:
    """Several sites: distinct, no transcoder; --distribute-sites only with --parallel data."""
    sites = options.sites()
    if "" in sites or len(set(sites)) != len(sites):
        raise ConfigError(f"--site takes distinct comma-separated sites; got {options.site!r}")
    if len(sites) > 1 and options.site_out is not None:
        raise ConfigError("--site-out trains one transcoder: give it one --site, not several")
    if options.distribute_sites and config.parallel != "data":
        raise ConfigError(
            "--distribute-sites gives each rank whole SAEs and works with --parallel data only; "
            "--parallel latents shards one SAE over every rank (without --distribute-sites)"
        )


def run_train(namespace: argparse.Namespace) -> int:
    config = train_config_from_args(namespace)
    options = from_args(SAERunOptions, namespace)
    check_run(options, config)  # before minutes of loading and harvesting
    try:
        return train_and_report(options, config)
    except KeyboardInterrupt:
        # the checkpoint on disk is whole (written to a staging file, then renamed into place)
        print("interrupted; resume with the same command", file=sys.stderr)
        return 130


def train_and_report(options: SAERunOptions, config: TrainConfig) -> int:
    from rama import load
    from rama.activations import HarvestConfig
    from rama.distributed import setup_distributed

    # Under torchrun, join first: on CUDA that makes "cuda" mean this rank's GPU before the model loads.
    setup_distributed(config.device)
    model = load(options.model, device=config.device)
    harvest_config = (
        None
        if options.harvest_tokens is None
        else HarvestConfig(tokens=options.harvest_tokens, seed=config.seed)
    )
    return train_sites(model, options, config, harvest_config)


def train_sites(model: Any, options: SAERunOptions, config: TrainConfig, harvest_config: Any) -> int:
    """One job per site (`train` is `train_many` of one job); print the SAEs this rank trained, each
    under its site's name when there are several."""
    from rama.sae import train_many
    from rama.sae.runner import Job

    sites = [model.resolve(site)[0] for site in options.sites()]
    outs = options.outputs()
    jobs = [Job(site, out, config, options.site_out) for site, out in zip(sites, outs, strict=True)]
    results = train_many(
        model,
        jobs,
        corpus=options.corpus,
        harvest_config=harvest_config,
        eval_tokens=options.eval_tokens,
        stream=options.stream,
        activation_cache=options.activation_cache,
        distribute_sites=options.distribute_sites,
        activation_ring=options.activation_ring,
        ring_consumer=options.ring_consumer,
    )
    folders = {job.site: job.out for job in jobs}
    for sae, metrics in results:
        if len(jobs) > 1:
            print(f"== {sae.cfg.hook_name}")
        print_metrics(metrics)
        print(f"wrote {folders[sae.cfg.hook_name] / 'metrics.json'}")
    return 0


def run_eval(options: SAEEvalOptions) -> int:
    from rama import load
    from rama.activations import HarvestConfig
    from rama.sae import SAE, evaluate

    sae = SAE.load(options.folder)
    model_name = options.model or sae.cfg.model_name
    if not model_name:
        raise ConfigError(f"{options.folder!r} does not name its model; pass --model")
    model = load(model_name)
    site = options.site or sae.cfg.hook_name
    if site not in model.sites:
        raise ConfigError(f"site {site!r} is not a site of {model_name}; pass --site")
    sae.cfg.hook_name = site
    width = model.site_shape(site)[-1]
    if width != sae.cfg.d_in:
        raise ConfigError(f"the SAE reads d_in={sae.cfg.d_in} but {site} of {model_name} has width {width}")
    config = HarvestConfig(tokens=options.eval_tokens, split="test", progress=False)
    metrics = evaluate(sae, model, corpus=options.corpus, config=config)
    metrics.pop("log10_density")
    print_metrics(metrics)
    return 0


def print_metrics(metrics: dict[str, object]) -> None:
    for key, value in metrics.items():
        if key != "log10_density_histogram":
            print(f"{key:22s} {value:.4f}" if isinstance(value, float) else f"{key:22s} {value}")
