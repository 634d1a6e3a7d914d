"""`rama circuits ioi MODEL`: the IOI task on a real model and its circuit found by path patching."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rama.circuits.ioi_search import CLASSES, IOISearchConfig
from rama.cli.options import add_options, from_args, option
from rama.errors import ConfigError, OutputError

OUTPUTS = ("ioi_circuit.json", "ioi_circuit.png")
ATTENTION_OF = {
    "name_mover": "END→IO",
    "negative_name_mover": "END→IO",
    "s_inhibition": "END→S2",
    "duplicate_token": "S2→S1",
    "induction": "S2→S1+1",
    "previous_token": "S1+1→S1",
}


@dataclass(frozen=True)
class IOIOptions:
    model: str = option("smollm2-135m", "built-in name, local HF folder or hub id", positional=True)
    json: bool = option(False, "print the whole result as JSON (effects of every head per step, attention)")
    out: str = option("", "folder for ioi_circuit.json and ioi_circuit.png")
    template_set: str = option(
        "real",
        "'real' (the built-in templates and names) or 'toy-ioi' (the IOI toy's own templates and words)",
    )

    def __post_init__(self) -> None:
        if self.template_set not in ("real", "toy-ioi"):
            raise ConfigError(f"--template-set is 'real' or 'toy-ioi', not {self.template_set!r}")
        out = Path(self.out) if self.out else None
        if out is not None and out.is_file():
            raise OutputError(f"--out {self.out!r} is a file; give a folder for {' and '.join(OUTPUTS)}")
        taken = [name for name in OUTPUTS if out is not None and (out / name).exists()]
        if taken:
            raise OutputError(f"{self.out!r} already holds {', '.join(taken)}; choose another --out")


def register_ioi(commands: argparse._SubParsersAction) -> None:
    """Add `ioi` to the `rama circuits` group."""
    ioi = commands.add_parser(
        "ioi",
        help="indirect object identification: logit difference, accuracy and the circuit by path patching",
        epilog="example: rama circuits ioi smollm2-135m --n 24 --out ioi/",
    )
    for options in (IOIOptions, IOISearchConfig):  # the command's own, then the search's settings
        add_options(ioi, options)
    ioi.set_defaults(handler=run_ioi)


def run_ioi(args: argparse.Namespace) -> int:
    from rama import load
    from rama.atomic import write_text
    from rama.circuits.ioi_prompts import ioi_prompts
    from rama.circuits.ioi_search import find_ioi_circuit, ioi_circuit_figure

    options, config = from_args(IOIOptions, args), from_args(IOISearchConfig, args)
    model = load(options.model)
    words: dict[str, Any] = {}
    if options.template_set == "toy-ioi":
        from rama.toys import ioi as toy

        words = {
            "template_set": toy.TEMPLATES,
            "names": toy.NAMES,
            "places": toy.PLACES,
            "objects": toy.OBJECTS,
        }
    groups = ioi_prompts(model.tokenizer, config.n, config.seed, n_templates=config.templates, **words)
    result = find_ioi_circuit(model, groups, config)
    record = {"model_source": options.model, "template_set": options.template_set, **result.to_json()}
    if options.out:
        out = Path(options.out)
        write_text(out / OUTPUTS[0], json.dumps(record, indent=1) + "\n")
        ioi_circuit_figure(record, out / OUTPUTS[1], title=f"{options.model}: IOI circuit by path patching")
    print(json.dumps(record) if options.json else ioi_text(record))
    return 0


def ioi_text(record: dict[str, Any]) -> str:
    """The result as a few lines: the task, each class with effects, faithfulness."""
    faith = record["faithfulness"]
    lines = [
        f"IOI on {record['model_source']}: {record['n_prompts']} prompts, logit difference "
        f"{record['logit_difference']:.3f}, accuracy {record['accuracy']:.3f} (IO above S), "
        f"top-1 {record['top1_accuracy']:.3f}",
        "heads per class (layer.head effect attention; effect = relative change of the logit difference "
        "when the head's path is patched with the ABC prompt):",
    ]
    for name in CLASSES:
        entries = record["classes"].get(name, [])
        shown = ", ".join(
            f"{e['layer']}.{e['head']} {e['effect']:+.3f} {e['attention']:.2f}" for e in entries
        )
        lines.append(f"  {name:20s} [{ATTENTION_OF[name]}] {shown or '-'}")
    for step, entries in record["unexplained"].items():
        if entries:
            shown = ", ".join(f"{e['layer']}.{e['head']} {e['effect']:+.3f}" for e in entries)
            lines.append(f"  unexplained ({step}): {shown}")
    lines.append(
        f"faithfulness: the {int(faith['heads_in_circuit'])} circuit heads alone (all others mean-ablated "
        f"over ABC) keep {faith['circuit']:.3f} of {faith['model']:.3f} ({faith['share_kept']:.1%}); "
        f"no heads at all: {faith['no_heads']:.3f}"
    )
    for name, pair in record["completeness"].items():
        lines.append(
            f"completeness, without {name}: circuit {pair['circuit_without']:.3f}, model {pair['model_without']:.3f}"
        )
    lines.append(f"took {record['seconds']:.1f} s")
    return "\n".join(lines)
