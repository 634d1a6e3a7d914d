"""`rama probe capability`: find the SAE latents that carry one capability, ablate them (the SAE's error
term kept), and print every capability's accuracy and answer log-prob before and after, beside an
ablation of as many random latents, with the specificity ratio (target's drop / mean drop of the others)."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from typing import Any

from rama.cli.options import add_options, from_args, option
from rama.errors import ConfigError

EXAMPLE = "example: rama probe capability --model smollm2-135m --sae sae-l9 --target countries --latents 20"


@dataclass(frozen=True)
class CapabilityPaths:
    model: str = option("smollm2-135m", "built-in name, local HF folder or hub id")
    sae: str = option("", "SAE folder; its site is where latents are ablated (required)")
    target: str = option(
        "", "the capability whose latents are ablated: countries, letters or brackets (required)"
    )
    json: bool = option(False, "print the result as one JSON object")


def register(commands: argparse._SubParsersAction) -> None:
    """Add `capability` to the `rama probe` group."""
    from rama.probes.capability import CapabilityConfig

    parser = commands.add_parser(
        "capability",
        help="ablate the latents that carry a capability and measure all of them",
        epilog=EXAMPLE,
    )
    add_options(parser, CapabilityPaths)
    add_options(parser, CapabilityConfig)
    parser.set_defaults(handler=run_capability)


def finite(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def run_capability(args: argparse.Namespace) -> int:
    import rama
    from rama.probes.capability import CAPABILITIES, CapabilityConfig, capability_ablation, check_request
    from rama.sae import SAE

    paths, config = from_args(CapabilityPaths, args), from_args(CapabilityConfig, args)
    for name in ("sae", "target"):
        if not getattr(paths, name):
            raise ConfigError(f"--{name} is required; {EXAMPLE}")
    if paths.target not in CAPABILITIES:
        raise ConfigError(f"unknown capability {paths.target!r}; choose one of {', '.join(CAPABILITIES)}")
    sae = SAE.load(paths.sae)
    check_request(sae, paths.target, list(CAPABILITIES), config)  # before the model loads
    model = rama.load(paths.model)
    result = capability_ablation(model, sae, paths.target, config)
    if paths.json:
        print(json.dumps(finite(result.to_dict())))
        return 0
    print(f"ablating {len(result.latents)} latents of {paths.target!r} at {result.site} (rule {result.rule}): "
          f"{result.latents}")  # fmt: skip
    print(result.markdown(), end="")
    return 0
