"""`rama features score`: how good each explanation in a feature store is, as a number: delphi's
detection protocol offline (MiniLM cosine between the explanation and activating vs non-activating
contexts, AUROC), saved beside the explanation under the scorer `detection-minilm`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from statistics import median

from rama.cli.options import add_options, from_args, option
from rama.errors import ConfigError

SHOWN = 20  # scores printed one per line; more are summarised


@dataclass(frozen=True)
class FeatureScoreOptions:
    db: str = option("", "the feature store (from `rama features build`)", positional=True)
    source: str = option("", "score the explanations saved under this source (e.g. openai:gpt-4o-mini)")
    label: bool = option(False, "score the human labels instead (copied to the source 'human-label')")
    kind: str = option("latent", "latent | neuron")
    seed: int = option(0, "seed of the non-activating contexts drawn for each unit")
    progress: bool = option(True, "show a progress bar")


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `score` subcommand to `rama features`."""
    parser = commands.add_parser(
        "score",
        help="score explanations offline: AUROC of MiniLM similarity on activating vs other contexts",
        epilog="example: rama features score l9.db --source openai:gpt-4o-mini",
    )
    add_options(parser, FeatureScoreOptions)
    parser.set_defaults(handler=run_score)


def run_score(namespace: argparse.Namespace) -> int:
    from rama.features.detection_scoring import (
        DETECTION_SCORER,
        LABEL_SOURCE,
        copy_labels,
        score_explanations,
    )
    from rama.features.store import FeatureStore

    options = from_args(FeatureScoreOptions, namespace)
    if bool(options.source) == options.label:
        raise ConfigError(
            "give either --source SOURCE (explanations saved under it) or --label (human labels)"
        )
    if options.kind not in ("latent", "neuron"):
        raise ConfigError(f"--kind must be 'latent' or 'neuron', not {options.kind!r}")
    source = LABEL_SOURCE if options.label else options.source
    with FeatureStore(options.db, writable=True) as store:
        if options.label and not copy_labels(store, options.kind):
            raise ConfigError(f"{options.db!r} has no human labels on its {options.kind}s; add some first")
        scores = score_explanations(store, source, options.kind, seed=options.seed, progress=options.progress)
        texts = {s.id: next(e["text"] for e in store.explanations(s.id, s.kind) if e["source"] == source)
                 for s in scores[:SHOWN]}  # fmt: skip
    for score in scores[:SHOWN]:
        print(f"{score.kind} {score.id}: AUROC {score.auroc:.3f} ({score.activating} activating, "
              f"{score.non_activating} not)  {texts[score.id]}")  # fmt: skip
    values = [s.auroc for s in scores]
    summary = f"mean AUROC {sum(values) / len(values):.3f}, median {median(values):.3f}" if values else "none"
    print(
        f"scored {len(scores)} explanations from {source!r} with {DETECTION_SCORER}: {summary}; saved in {options.db}"
    )
    return 0
