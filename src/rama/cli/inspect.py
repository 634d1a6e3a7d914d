"""`rama sites` and `rama run`: what a model exposes, and what one forward pass shows there."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import torch

from rama.cli.options import add_options, from_args, option
from rama.models.sites import block_prefix


@dataclass(frozen=True)
class SitesConfig:
    model: str = option("smollm2-135m", "built-in name, local HF folder or hub id", positional=True)
    layer: int | None = option(None, "only the sites of this block")


@dataclass(frozen=True)
class RunConfig:
    model: str = option("smollm2-135m", "built-in name, local HF folder or hub id", positional=True)
    text: str = option("", "the input text", positional=True)
    site: list[str] = field(default_factory=list, metadata={"help": "site name or glob to show; repeatable"})
    top_k: int = option(5, "how many next-token candidates to print")


def register(subparsers: argparse._SubParsersAction) -> None:
    sites = subparsers.add_parser(
        "sites",
        help="list every hook site of a model",
        epilog="example: rama sites smollm2-135m --layer 0",
    )
    add_options(sites, SitesConfig)
    sites.set_defaults(handler=lambda ns: show_sites(from_args(SitesConfig, ns)))
    run = subparsers.add_parser(
        "run",
        help="run text through a model: site shapes and norms, top next tokens",
        epilog="example: rama run smollm2-135m 'The capital of France is' --site 'blocks.*.hook_resid_post'",
    )
    add_options(run, RunConfig)
    run.set_defaults(handler=lambda ns: run_text(from_args(RunConfig, ns)))


def show_sites(config: SitesConfig) -> int:
    from rama import load

    model = load(config.model)
    names = model.sites if config.layer is None else model.resolve(block_prefix(config.layer) + "*")
    print(f"# {model!r}")
    for name in names:
        print(name)
    return 0


def run_text(config: RunConfig) -> int:
    from rama import load

    model = load(config.model)
    names = model.resolve(config.site) if config.site else []
    with torch.no_grad():
        output, cache = model.run_with_cache(config.text, names=names)
    tokens = model.to_str_tokens(config.text)
    print(f"# {model!r}\n# {len(tokens)} tokens: {tokens}")
    for name, value in cache.items():
        norm = value.float().norm(dim=-1).mean().item()
        print(f"{name:45s} {tuple(value.shape)!s:24s} mean norm {norm:10.3f}")
    if output is not None and model.cfg.is_causal:
        probs = output[0, -1].float().softmax(-1)
        top = probs.topk(config.top_k)
        print("next token:")
        for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            print(f"  {model.tokenizer.decode([i])!r:20s} {p:.3f}")
    return 0
