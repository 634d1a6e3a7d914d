"""`rama steer`: steered and unsteered generations side by side; `rama steer sweep`: a measured
strength sweep; `rama steer export`: the steered model as plain Hugging Face weights.

`--strength` in `--mode add` is relative (`--scale residual`, the default): the direction is rescaled
so that strength 1.0 adds a vector whose norm equals the site's typical residual norm — the mean
‖activation‖ at the site over every token but the first of a few fixed neutral sentences
(`rama.interventions.steering.REFERENCE_TEXTS`). Useful strengths are about 0.1–0.5. `--scale raw`
adds strength × the vector as given. In `--mode clamp` the strength is the value the component along
the direction (for an SAE feature: its activation) is set to. Everything a command needs is checked
before the model loads.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rama.cli.options import add_options, from_args, option
from rama.errors import ConfigError, InputError

EXAMPLE = (
    "example: rama steer --site blocks.12.hook_resid_post "
    "--contrast 'The ship sailed on the sea' 'The meeting starts at nine' --strength 0.25 "
    "'Let me describe myself. I am'"
)
MODES = ("add", "clamp")
SCALES = ("residual", "raw")
ADD_STRENGTH = 0.25
STRENGTH_HELP = (
    "add: strength × the site's typical residual norm (1.0 = as long as the activations; "
    f"default {ADD_STRENGTH}), or × the raw vector with --scale raw; "
    "clamp: the value the component (or the SAE feature) is set to (required)"
)


@dataclass(frozen=True)
class SourceOptions:
    model: str = option("smollm2-135m", "built-in name, local HF folder or hub id")
    site: str = option("", "the site to steer (default with --sae: the SAE's own site)")
    sae: str | None = option(None, "SAE folder: steer one of its latents (with --feature)")
    feature: int | None = option(None, "the SAE latent to steer")
    vector: str | None = option(None, "a .pt / .npy / .safetensors file holding a [d_model] direction")
    contrast: list[str] | None = option(  # noqa: RUF009 (None: immutable)
        None,
        "two prompts, positive then negative: the difference of their mean activations over every "
        "token but the first",
        nargs=2,
    )
    scale: str = option("residual", "residual: strengths relative to the site's typical residual norm | raw")


@dataclass(frozen=True)
class RunOptions(SourceOptions):
    strength: float | None = option(None, STRENGTH_HELP)
    mode: str = option("add", "add | clamp")
    max_new_tokens: int = option(30, "tokens to generate")
    prompt: str = option("", "the prompt", positional=True)


@dataclass(frozen=True)
class SweepOptions(SourceOptions):
    mode: str = option("add", "add | clamp")
    max_new_tokens: int = option(30, "tokens to generate")
    prompts: list[str] | None = option(  # noqa: RUF009 (the default, None, is immutable)
        None, "a prompt (repeat the flag) or a .txt file with one per line"
    )
    strengths: str = option(
        "0,0.1,0.25,0.5",
        "comma-separated strengths, on the scale of `rama steer`; 0 is the unsteered baseline",
    )
    keywords: str = option(
        "", "comma-separated words ('ship*': a prefix); a continuation with one is on-concept"
    )
    concept: str = option("", "or: a description; on-concept when MiniLM cosine ≥ --threshold")
    threshold: float = option(0.35, "cosine threshold of the embedding scorer")
    out: str = option("rama-steer-sweep", "folder for sweep.json and sweep.png")


@dataclass(frozen=True)
class ExportOptions(SourceOptions):
    strength: float = option(
        ADD_STRENGTH, "strength × the site's typical residual norm (--scale raw: × the vector)"
    )
    out: str = option("", "output folder for the steered Hugging Face model (required)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "steer",
        help="steer generation (also: steer sweep, steer export)",
        epilog=EXAMPLE + "\n  rama steer sweep --help   |   rama steer export --help",
    )
    parser.set_defaults(handler=lambda _: dispatch([]))


def _parser(name: str, options: type, epilog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"rama {name}",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # `--mode` must not be read as `--model`
    )
    add_options(parser, options)
    return parser


def dispatch(argv: list[str]) -> int:
    """`rama steer …` arguments (after "steer"): the main command, `sweep` or `export`; none: its help."""
    if argv[:1] == ["sweep"]:
        epilog = "example: rama steer sweep --site blocks.12.hook_resid_post --contrast 'weddings' 'taxes' --prompts 'I think' --keywords 'wedding*,bride*'"
        return run_sweep(
            from_args(SweepOptions, _parser("steer sweep", SweepOptions, epilog).parse_args(argv[1:]))
        )
    if argv[:1] == ["export"]:
        epilog = "example: rama steer export --site blocks.12.hook_resid_post --vector v.pt --strength 0.25 --out steered"
        return run_export(
            from_args(ExportOptions, _parser("steer export", ExportOptions, epilog).parse_args(argv[1:]))
        )
    epilog = EXAMPLE + "\nmore: rama steer sweep --help   |   rama steer export --help"
    parser = _parser("steer", RunOptions, epilog)
    if not argv:
        parser.print_help()
        return 2
    return run(from_args(RunOptions, parser.parse_args(argv)))


def check_choices(options: Any) -> None:
    """Settings that need no model: checked first, so a typo costs no model load."""
    mode = getattr(options, "mode", "add")
    if mode not in MODES:
        raise ConfigError(f"--mode must be one of {', '.join(MODES)}; got {mode!r}")
    if options.scale not in SCALES:
        raise ConfigError(f"--scale must be one of {', '.join(SCALES)}; got {options.scale!r}")
    if options.contrast and not all(p.strip() for p in options.contrast):
        raise InputError("--contrast needs two non-empty prompts")
    if options.vector is not None:
        read_vector(options.vector)


def read_vector(path: str) -> Any:
    """The vector file's tensor; an unreadable, corrupt or truncated file is an error naming it."""
    import pickle

    from rama.interventions.steering_sources import load_vector

    try:
        return load_vector(path)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as error:
        raise InputError(f"cannot read the steering vector file {path!r}: {error}") from error
    except Exception as error:  # safetensors raises its own SafetensorError on a damaged header
        if type(error).__name__ != "SafetensorError":
            raise
        raise InputError(f"cannot read the steering vector file {path!r}: {error}") from error


def _prepare(options: SourceOptions) -> tuple[Any, str, Any]:
    """(model, site, source), after every check that needs no model."""
    import rama
    from rama.interventions.steering_sources import SteeringSource
    from rama.sae.base import SAE

    check_choices(options)
    contrast = None
    if options.contrast:
        contrast = ((options.contrast[0],), (options.contrast[1],))
    try:
        source = SteeringSource(
            sae=options.sae, feature=options.feature, vector=options.vector, contrast=contrast
        )
    except ValueError as error:
        raise ConfigError(str(error)) from error
    site = options.site or (SAE.load(options.sae).cfg.hook_name if options.sae else "")
    if not site:
        raise ConfigError("give the site to steer: --site blocks.L.hook_resid_post")
    return rama.load(options.model), site, source


def unit_vector(model: Any, site: str, source: Any, scale: str) -> tuple[Any, str]:
    """(the vector that strength 1 adds, a line saying what that means): rescaled to the site's typical
    residual norm, or the source's vector as it is with `--scale raw`."""
    from rama.interventions.steering import relative_vector, typical_norm
    from rama.interventions.steering_sources import direction

    vector = direction(model, site, source)
    raw = float(vector.norm())
    if scale == "raw":
        return vector, f"strength 1 = the vector as given, norm {raw:.4g}"
    unit = typical_norm(model, site)
    meaning = f"strength 1 = norm {unit:.1f}, the typical residual norm at {site}; raw vector norm {raw:.4g}"
    return relative_vector(model, site, vector, 1.0, unit), meaning


def hooks_at(model: Any, site: str, source: Any, options: Any) -> tuple[Callable[[float], Any], str]:
    """(strength -> hook, a line saying what a strength means, empty for a clamp) for the options'
    mode and scale."""
    from rama.interventions.steering import add_vector
    from rama.interventions.steering_sources import steering_factory

    if getattr(options, "mode", "add") == "clamp":
        return steering_factory(model, site, source, "clamp"), ""
    vector, meaning = unit_vector(model, site, source, options.scale)
    return lambda strength: add_vector(model, site, vector, strength), meaning


def run(options: RunOptions) -> int:
    from rama.interventions.steering import check_finite_output, check_strength

    if not options.prompt.strip():
        raise InputError("give a prompt: rama steer [options] 'The prompt'")
    strength = options.strength
    if strength is None:
        if options.mode == "clamp":
            raise ConfigError("--mode clamp needs --strength: the value to set the component to")
        strength = ADD_STRENGTH
    check_strength("--strength", strength)
    model, site, source = _prepare(options)
    factory, meaning = hooks_at(model, site, source, options)
    hook = factory(strength)
    check_finite_output(model, options.prompt, [hook])
    plain = model.generate(options.prompt, max_new_tokens=options.max_new_tokens)
    steered = model.generate(options.prompt, max_new_tokens=options.max_new_tokens, fwd_hooks=[hook])
    said = f"{options.mode} {strength:g} at {site}" + (f"; {meaning}" if meaning else "")
    print(f"unsteered:\n  {plain}\n\nsteered ({said}):\n  {steered}")
    return 0


def _prompts(options: SweepOptions) -> list[str]:
    given = options.prompts or []
    if len(given) == 1 and given[0].endswith(".txt"):
        file = Path(given[0])
        if not file.is_file():
            raise InputError(f"no prompts file at {str(file)!r}")
        given = [line for line in file.read_text().splitlines() if line.strip()]
    if not given:
        raise InputError("give prompts: --prompts 'A prompt' (repeat) or --prompts prompts.txt")
    if not all(p.strip() for p in given):
        raise InputError("a prompt given to --prompts is empty")
    return given


def _strengths(text: str) -> list[float]:
    from rama.interventions.steering import check_strength

    try:
        return [check_strength("a strength", float(s)) for s in text.split(",")]
    except ValueError as error:
        raise ConfigError(f"--strengths must be comma-separated numbers; got {text!r} ({error})") from error


def run_sweep(options: SweepOptions) -> int:
    from rama.interventions.sweep import embedding_scorer, keyword_scorer, plot_sweep, strength_sweep

    if bool(options.keywords) == bool(options.concept):
        raise ConfigError("choose one concept scorer: --keywords a,b,c or --concept 'a description'")
    prompts, strengths = _prompts(options), _strengths(options.strengths)
    model, site, source = _prepare(options)
    scorer, name = (
        (keyword_scorer(options.keywords.split(",")), f"keywords: {options.keywords}")
        if options.keywords
        else (
            embedding_scorer(options.concept, options.threshold),
            f"MiniLM cosine ≥ {options.threshold} to {options.concept!r}",
        )
    )
    factory, meaning = hooks_at(model, site, source, options)
    if meaning:
        print(meaning)
    result = strength_sweep(
        model, lambda strength: [factory(strength)], prompts, strengths, scorer, name, site,
        options.max_new_tokens,
    )  # fmt: skip
    out = Path(options.out)
    result.save(out / "sweep.json")
    plot_sweep({options.mode: result}, out / "sweep.png", f"steering at {site} ({name})")
    for point in result.points:
        print(
            f"strength {point.strength:8g}  concept rate {point.concept_rate:.2f}  perplexity {point.perplexity:7.2f}"
        )
    print(f"wrote {out / 'sweep.json'} and {out / 'sweep.png'}")
    return 0


def run_export(options: ExportOptions) -> int:
    from rama.interventions.export import check_export_target, export_steered
    from rama.interventions.steering import check_strength

    if not options.out:
        raise ConfigError("give the output folder: --out DIR")
    check_strength("--strength", options.strength)
    check_export_target(options.out)
    model, site, source = _prepare(options)
    vector, meaning = unit_vector(model, site, source, options.scale)
    print(meaning)
    folder = export_steered(model, site, vector, options.strength, options.out)
    print(f"wrote {folder}: load it with transformers.AutoModelForCausalLM.from_pretrained({str(folder)!r})")
    return 0
