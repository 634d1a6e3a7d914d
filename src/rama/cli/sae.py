"""`rama sae train` and `rama sae eval`: text to a trained, evaluated SAE, and metrics of a saved one."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from rama.cli.options import add_options, from_args, option


@dataclass(frozen=True)
class SAETrainOptions:
    model: str = option("smollm2-135m", "built-in name, local HF folder or hub id")
    site: str = option("blocks.9.hook_resid_post", "the site the SAE reads")
    site_out: str | None = option(None, "train a transcoder that predicts this site instead")
    arch: str = option("topk", "topk | batchtopk | matryoshka | standard (ReLU+L1) | jumprelu | gated")
    width: int = option(4608, "number of latents (d_sae)")
    k: int | None = option(32, "active latents per token (topk, batchtopk, matryoshka)")
    matryoshka_widths: str | None = option(
        None,
        "--arch matryoshka: comma-separated prefix widths ending at --width (default: width/64, /16, /4, width)",
    )
    l1: float = option(0.0, "L1 coefficient (standard, gated)")
    l0: float = option(0.0, "L0 coefficient (jumprelu)")
    target_l0: float | None = option(
        None, "steer the L1/L0 coefficient while training until this many latents fire per token"
    )
    skip: bool = option(False, "add a skip connection (skip-transcoder)")
    tokens: int = option(2_000_000, "training tokens")
    harvest_tokens: int | None = option(
        None,
        "tokens to harvest (default: --tokens; fewer means epochs, over activations held in memory "
        "or in --activation-cache)",
    )
    batch_size: int = option(4096, "activations per training step")
    lr: float | None = option(None, "learning rate (default: 2e-4 / sqrt(width / 16384))")
    eval_tokens: int = option(16_384, "held-out tokens for metrics.json")
    corpus: str | None = option(None, "corpus file/folder (default: the built-in English corpus)")
    seed: int = option(0, "seed for data order and initialisation")
    stream: bool = option(
        True,
        "harvest in a background thread into a shuffle buffer (flat memory); "
        "--no-stream harvests everything first, in memory",
    )
    activation_cache: str | None = option(
        None,
        "folder of harvested activations: filled on the first run (sharded safetensors, resumable), "
        "reused by later runs with the same model, corpus, seed and --harvest-tokens",
    )
    device: str = option("cpu", "where the model runs and the SAE trains: cpu, cuda or cuda:N")
    out: str = option("rama-sae", "output folder (must not hold a finished run; a killed run resumes)")


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
        epilog="example: rama sae train --site blocks.9.hook_resid_post --arch topk --width 4608 --k 32 "
        "--tokens 2000000 --out sae-l9",
    )
    add_options(train_parser, SAETrainOptions)
    train_parser.set_defaults(handler=lambda ns: run_train(from_args(SAETrainOptions, ns)))
    eval_parser = commands.add_parser(
        "eval", help="metrics of a saved SAE on held-out text", epilog="example: rama sae eval sae-l9"
    )
    add_options(eval_parser, SAEEvalOptions)
    eval_parser.set_defaults(handler=lambda ns: run_eval(from_args(SAEEvalOptions, ns)))


def parse_matryoshka_widths(options: SAETrainOptions) -> list[int] | None:
    if options.matryoshka_widths is None:
        return None
    if options.arch != "matryoshka":
        raise SystemExit(f"--matryoshka-widths is for --arch matryoshka; got --arch {options.arch}")
    from rama.sae.base import SAEConfig
    from rama.sae.matryoshka import WIDTHS_KEY, matryoshka_widths

    try:  # checked here, before minutes of harvesting, by the rule the SAE itself applies
        widths = [int(w) for w in options.matryoshka_widths.split(",")]
        matryoshka_widths(SAEConfig(d_in=1, d_sae=options.width, extra={WIDTHS_KEY: widths}))
    except ValueError as error:
        raise SystemExit(
            f"--matryoshka-widths takes comma-separated integers rising to --width, such as 72,288,1152,4608: "
            f"{error}"
        ) from None
    return widths


def run_train(options: SAETrainOptions) -> int:
    from rama import load
    from rama.activations import HarvestConfig, stream_harvest_tokens
    from rama.sae import TrainConfig, train
    from rama.sae.training import check_device

    config = TrainConfig(
        architecture=options.arch,
        matryoshka_widths=parse_matryoshka_widths(options),
        d_sae=options.width,
        k=options.k,
        l1_coefficient=options.l1,
        l0_coefficient=options.l0,
        target_l0=options.target_l0,
        skip_connection=options.skip,
        total_tokens=options.tokens,
        batch_size=options.batch_size,
        lr=options.lr,
        seed=options.seed,
        device=options.device,
    )
    try:  # before minutes of loading and harvesting
        check_device(options.device)
    except ValueError as error:
        raise ValueError(f"--device: {error}") from None
    model = load(options.model, device=options.device)
    epochs = options.harvest_tokens is not None and options.harvest_tokens < options.tokens
    if epochs and options.stream and options.activation_cache is None:
        print(
            f"--harvest-tokens {options.harvest_tokens} < --tokens {options.tokens}: epochs over activations in memory"
        )
    streaming = options.stream and options.activation_cache is None and not epochs
    default_harvest = (
        stream_harvest_tokens(options.tokens, options.batch_size) if streaming else options.tokens
    )
    harvest_config = HarvestConfig(tokens=options.harvest_tokens or default_harvest, seed=options.seed)
    _, metrics = train(
        model,
        model.resolve(options.site)[0],
        options.out,
        config=config,
        corpus=options.corpus,
        harvest_config=harvest_config,
        eval_tokens=options.eval_tokens,
        site_out=options.site_out,
        stream=streaming,
        activation_cache=options.activation_cache,
    )
    print_metrics(metrics)
    print(f"wrote {Path(options.out) / 'metrics.json'}")
    return 0


def run_eval(options: SAEEvalOptions) -> int:
    from rama import load
    from rama.activations import HarvestConfig
    from rama.sae import SAE, evaluate

    sae = SAE.load(options.folder)
    model_name = options.model or sae.cfg.model_name
    if not model_name:
        raise ValueError(f"{options.folder!r} does not name its model; pass --model")
    model = load(model_name)
    site = options.site or sae.cfg.hook_name
    if site not in model.sites:
        raise ValueError(f"site {site!r} is not a site of {model_name}; pass --site")
    sae.cfg.hook_name = site
    width = model.site_shape(site)[-1]
    if width != sae.cfg.d_in:
        raise ValueError(f"the SAE reads d_in={sae.cfg.d_in} but {site} of {model_name} has width {width}")
    config = HarvestConfig(tokens=options.eval_tokens, split="test", progress=False)
    metrics = evaluate(sae, model, corpus=options.corpus, config=config)
    metrics.pop("log10_density")
    print_metrics(metrics)
    return 0


def print_metrics(metrics: dict[str, object]) -> None:
    for key, value in metrics.items():
        if key != "log10_density_histogram":
            print(f"{key:22s} {value:.4f}" if isinstance(value, float) else f"{key:22s} {value}")
