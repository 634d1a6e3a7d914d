"""`rama steer`: steered and unsteered generations side by side; `rama steer sweep`: a measured
strength sweep; `rama steer export`: the steered model as plain Hugging Face weights."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from rama.cli.options import add_options, from_args, option

EXAMPLE = (
    "example: rama steer --site blocks.12.hook_resid_post --contrast 'I love it' 'I hate it' "
    "--strength 4 'The film was'"
)


@dataclass(frozen=True)
class SteerOptions:
    model: str = option("smollm2-135m", "built-in name, local HF folder or hub id")
    site: str = option("", "the site to steer (default with --sae: the SAE's own site)")
    sae: str | None = option(None, "SAE folder: steer one of its latents (with --feature)")
    feature: int | None = option(None, "the SAE latent to steer")
    vector: str | None = option(None, "a .pt / .npy / .safetensors file holding a [d_model] direction")
    contrast: list[str] | None = option(  # noqa: RUF009 (None: immutable)
        None, "two prompts, positive then negative (difference of means)", nargs=2
    )
    strength: float = option(
        4.0, "add: x + strength·v; clamp: the component (or the SAE feature) := strength"
    )
    mode: str = option("add", "add | clamp")
    max_new_tokens: int = option(30, "tokens to generate")


@dataclass(frozen=True)
class RunOptions(SteerOptions):
    prompt: str = option("", "the prompt", positional=True)


@dataclass(frozen=True)
class SweepOptions(SteerOptions):
    prompts: list[str] | None = option(  # noqa: RUF009 (the default, None, is immutable)
        None, "a prompt (repeat the flag) or a .txt file with one per line"
    )
    strengths: str = option("0,2,4,8", "comma-separated strengths; 0 is the unsteered baseline")
    keywords: str = option(
        "", "comma-separated words ('ship*': a prefix); a continuation with one is on-concept"
    )
    concept: str = option("", "or: a description; on-concept when MiniLM cosine ≥ --threshold")
    threshold: float = option(0.35, "cosine threshold of the embedding scorer")
    out: str = option("rama-steer-sweep", "folder for sweep.json and sweep.png")


@dataclass(frozen=True)
class ExportOptions(SteerOptions):
    out: str = option("", "output folder for the steered Hugging Face model")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "steer",
        help="steer generation (also: steer sweep, steer export)",
        epilog=EXAMPLE + "\n  rama steer sweep --help   |   rama steer export --help",
    )
    parser.set_defaults(handler=lambda _: dispatch([]))


def _parser(name: str, options: type, epilog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"rama {name}", epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_options(parser, options)
    return parser


def dispatch(argv: list[str]) -> int:
    """`rama steer …` arguments (after "steer"): the main command, `sweep` or `export`."""
    if argv[:1] == ["sweep"]:
        epilog = "example: rama steer sweep --site blocks.12.hook_resid_post --contrast 'weddings' 'taxes' --prompts 'I think' --keywords 'wedding*,bride*'"
        return run_sweep(
            from_args(SweepOptions, _parser("steer sweep", SweepOptions, epilog).parse_args(argv[1:]))
        )
    if argv[:1] == ["export"]:
        epilog = "example: rama steer export --site blocks.12.hook_resid_post --vector v.pt --strength 4 --out steered"
        return run_export(
            from_args(ExportOptions, _parser("steer export", ExportOptions, epilog).parse_args(argv[1:]))
        )
    epilog = EXAMPLE + "\nmore: rama steer sweep --help   |   rama steer export --help"
    return run(from_args(RunOptions, _parser("steer", RunOptions, epilog).parse_args(argv)))


def _prepare(options: SteerOptions) -> tuple[object, str, object]:
    import rama
    from rama.interventions.steering_sources import SteeringSource
    from rama.sae.base import SAE

    contrast = None
    if options.contrast:
        contrast = ((options.contrast[0],), (options.contrast[1],))
    source = SteeringSource(
        sae=options.sae, feature=options.feature, vector=options.vector, contrast=contrast
    )
    site = options.site or (SAE.load(options.sae).cfg.hook_name if options.sae else "")
    if not site:
        raise ValueError("give the site to steer: --site blocks.L.hook_resid_post")
    return rama.load(options.model), site, source


def run(options: RunOptions) -> int:
    from rama.interventions.steering_sources import steering_hook

    if not options.prompt:
        raise ValueError("give a prompt: rama steer [options] 'The prompt'")
    model, site, source = _prepare(options)
    hook = steering_hook(model, site, source, options.strength, options.mode)  # type: ignore[arg-type]
    plain = model.generate(options.prompt, max_new_tokens=options.max_new_tokens)  # type: ignore[attr-defined]
    steered = model.generate(options.prompt, max_new_tokens=options.max_new_tokens, fwd_hooks=[hook])  # type: ignore[attr-defined]
    print(f"unsteered:\n  {plain}\n\nsteered ({options.mode} {options.strength:g} at {site}):\n  {steered}")
    return 0


def _prompts(options: SweepOptions) -> list[str]:
    given = options.prompts or []
    if len(given) == 1 and given[0].endswith(".txt") and Path(given[0]).is_file():
        return [line for line in Path(given[0]).read_text().splitlines() if line.strip()]
    if not given:
        raise ValueError("give prompts: --prompts 'A prompt' (repeat) or --prompts prompts.txt")
    return given


def run_sweep(options: SweepOptions) -> int:
    from rama.interventions.steering_sources import steering_factory
    from rama.interventions.sweep import embedding_scorer, keyword_scorer, plot_sweep, strength_sweep

    model, site, source = _prepare(options)
    if bool(options.keywords) == bool(options.concept):
        raise ValueError("choose one concept scorer: --keywords a,b,c or --concept 'a description'")
    scorer, name = (
        (keyword_scorer(options.keywords.split(",")), f"keywords: {options.keywords}")
        if options.keywords
        else (
            embedding_scorer(options.concept, options.threshold),
            f"MiniLM cosine ≥ {options.threshold} to {options.concept!r}",
        )
    )
    strengths = [float(s) for s in options.strengths.split(",")]
    hook_at = steering_factory(model, site, source, options.mode)  # type: ignore[arg-type]
    result = strength_sweep(
        model,  # type: ignore[arg-type]
        lambda strength: [hook_at(strength)],
        _prompts(options),
        strengths,
        scorer,
        name,
        site,
        options.max_new_tokens,
    )
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "sweep.json")
    plot_sweep({options.mode: result}, out / "sweep.png", f"steering at {site} ({name})")
    for point in result.points:
        print(
            f"strength {point.strength:8g}  concept rate {point.concept_rate:.2f}  perplexity {point.perplexity:7.2f}"
        )
    print(f"wrote {out / 'sweep.json'} and {out / 'sweep.png'}")
    return 0


def run_export(options: ExportOptions) -> int:
    from rama.interventions.export import export_steered
    from rama.interventions.steering_sources import direction

    if not options.out:
        raise ValueError("give the output folder: --out DIR")
    if options.mode != "add":
        raise ValueError("only additive steering (--mode add) can be written into weights")
    model, site, source = _prepare(options)
    vector = direction(model, site, source)  # type: ignore[arg-type]
    folder = export_steered(model, site, vector, options.strength, options.out)  # type: ignore[arg-type]
    print(f"wrote {folder}: load it with transformers.AutoModelForCausalLM.from_pretrained({str(folder)!r})")
    return 0
