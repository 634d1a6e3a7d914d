"""`rama circuits lens` (logit and tuned lens curves; training a tuned lens) and `rama circuits dla`
(direct logit attribution of one prompt's answer)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rama.atomic import write_text
from rama.circuits.lenses import TunedLensTraining
from rama.cli.options import add_options, from_args, option
from rama.errors import ConfigError, OutputError

MODEL_HELP = "built-in name (smollm2-135m), local HF folder or hub id"


@dataclass(frozen=True)
class LensOptions:
    model: str = option("smollm2-135m", MODEL_HELP, positional=True)
    tuned: str = option("", "a tuned-lens folder to compare with the logit lens")
    train: bool = option(False, "train a tuned lens on the corpus's train split (needs --out)")
    out: str = option("", "folder for the trained lens, lens_curves.json and lens_curves.png")
    corpus: str = option("", "text source (.txt, .jsonl, folder); default: the built-in English corpus")
    eval_tokens: int = option(4096, "held-out tokens the curves are measured on")
    json: bool = option(False, "print the curves as JSON")


@dataclass(frozen=True)
class DlaOptions:
    model: str = option("smollm2-135m", MODEL_HELP, positional=True)
    prompt: str = option("", "the prompt; its last token predicts the answer", positional=True)
    answer: str = option("", "the answer token, e.g. ' Paris' (one token, mind the leading space)")
    wrong: str = option("", "a wrong answer token: attribute the logit difference answer − wrong")
    top: int = option(10, "how many parts and heads to list")
    json: bool = option(False, "print every part and head as JSON")


def register_lens(commands: argparse._SubParsersAction) -> None:
    """Add `lens` and `dla` to the `rama circuits` group."""
    lens = commands.add_parser(
        "lens",
        help="logit lens and tuned lens: KL and perplexity by layer on held-out text",
        epilog="example: rama circuits lens smollm2-135m --train --tokens 32768 --out lens/smollm2",
    )
    add_options(lens, LensOptions)
    add_options(lens, TunedLensTraining)
    lens.set_defaults(handler=run_lens)
    dla = commands.add_parser(
        "dla",
        help="direct logit attribution: each layer's, head's and MLP's part of an answer's logit",
        epilog="example: rama circuits dla smollm2-135m 'The Eiffel Tower is in the city of' "
        "--answer ' Paris' --wrong ' Rome'",
    )
    add_options(dla, DlaOptions)
    dla.set_defaults(handler=run_dla)


def check_lens_options(config: LensOptions) -> Path | None:
    """The output folder, checked before any work: training needs one that holds no files but an
    unfinished run's checkpoint (which training resumes)."""
    if config.train and config.tuned:
        raise ConfigError("give either --train (train a new tuned lens) or --tuned DIR (load one), not both")
    if config.train and not config.out:
        raise ConfigError("--train needs an output folder: --out DIR")
    if config.eval_tokens < 1:
        raise ConfigError(f"--eval-tokens must be at least 1, not {config.eval_tokens}")
    if not config.out:
        return None
    out = Path(config.out)
    others = sorted(p.name for p in out.iterdir() if p.name != "checkpoint") if out.is_dir() else []
    if out.is_file() or others:
        raise OutputError(f"{str(out)!r} already holds files ({', '.join(others[:3])}); choose another --out")
    return out


def run_lens(args: argparse.Namespace) -> int:
    from rama import load
    from rama.circuits.lenses import (
        lens_curves,
        lens_figure,
        load_tuned_lens,
        remove_checkpoint,
        train_tuned_lens,
    )

    config, training = from_args(LensOptions, args), from_args(TunedLensTraining, args)
    out = check_lens_options(config)
    model = load(config.model)
    corpus = config.corpus or None
    tuned = load_tuned_lens(config.tuned, model) if config.tuned else None
    if config.train and out is not None:
        tuned = train_tuned_lens(model, training, corpus, checkpoint_dir=out / "checkpoint")
        tuned.save(out)
        remove_checkpoint(out / "checkpoint")
    curves = lens_curves(model, tuned, config.eval_tokens, corpus, training.batch_size, training.context_size,
                         progress=training.progress)  # fmt: skip
    record = {"model": config.model, "tuned_lens": config.tuned or config.out if tuned else None,
              "trained_tokens": tuned.meta.get("tokens") if tuned else None, **curves.to_dict()}  # fmt: skip
    if out is not None:
        write_text(out / "lens_curves.json", json.dumps(record, indent=2) + "\n")
        lens_figure(
            curves, out / "lens_curves.png", title=f"{config.model}: {curves.tokens:,} held-out tokens"
        )
    print(json.dumps(record) if config.json else lens_table(record))
    return 0


def lens_table(record: dict[str, Any]) -> str:
    names = list(record["kl"])
    header = (
        "layer "
        + " ".join(f"{'KL ' + n:>10s}" for n in names)
        + " "
        + " ".join(f"{'ppl ' + n:>11s}" for n in names)
    )
    rows = [
        f"# {record['tokens']:,} held-out tokens; model perplexity {record['model_perplexity']:.2f}",
        header,
    ]
    for layer in record["layers"]:
        kl = " ".join(f"{record['kl'][n][layer]:10.4f}" for n in names)
        ppl = " ".join(f"{record['perplexity'][n][layer]:11.2f}" for n in names)
        rows.append(f"{layer:5d} {kl} {ppl}")
    return "\n".join(rows)


def run_dla(args: argparse.Namespace) -> int:
    from rama import load
    from rama.circuits.logit_attribution import direct_logit_attribution, single_token

    config = from_args(DlaOptions, args)
    if not config.prompt or not config.answer:
        raise ConfigError(
            "give a prompt and an answer token: rama circuits dla MODEL 'prompt' --answer ' Paris'"
        )
    if config.top < 1:
        raise ConfigError(f"--top must be at least 1, not {config.top}")
    model = load(config.model)
    answer = single_token(model, config.answer)
    wrong = single_token(model, config.wrong) if config.wrong else None
    result = direct_logit_attribution(model, config.prompt, answer, wrong)
    record = {"model": config.model, "prompt": config.prompt, "answer": config.answer,
              "wrong": config.wrong or None, **result.to_dict()}  # fmt: skip
    print(json.dumps(record) if config.json else dla_text(record, config.top))
    return 0


def dla_text(record: dict[str, Any], top: int) -> str:
    what = f"logit({record['answer']!r})" + (f" − logit({record['wrong']!r})" if record["wrong"] else "")
    lines = [
        f"{what} = {record['total']:.4f} = parts {record['sum_of_parts']:.4f} + bias terms {record['bias']:.4f}"
        f" (final norm scale frozen at {record['scale']:.4f})",
        f"top {top} parts by size:",
    ]
    parts = sorted(record["parts"].items(), key=lambda item: -abs(item[1]))[:top]
    lines += [f"  {label:14s} {value:+9.4f}" for label, value in parts]
    if "heads" in record:
        heads = [(f"L{layer}H{head}", value) for layer, row in enumerate(record["heads"])
                 for head, value in enumerate(row)]  # fmt: skip
        lines.append(f"top {top} heads by size:")
        lines += [
            f"  {label:14s} {value:+9.4f}" for label, value in sorted(heads, key=lambda h: -abs(h[1]))[:top]
        ]
    return "\n".join(lines)
