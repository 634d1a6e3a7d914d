"""The SmolLM2 numbers in docs/probes.md: `python -m rama.probes.report --out docs/probes`.

Per built-in dataset: a layer sweep of every statement-level probe kind (one model pass per dataset),
the best layer per kind by validation AUROC with its test AUROC; recall at 1 % FPR on the control set for
the best logistic and difference-of-means probes; the generalisation matrix at one layer; and the share
of city facts the model gets right when asked directly. Writes `results.json` and `generalisation.png`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from rama.atomic import write_text
from rama.hooks.model import HookedModel
from rama.probes.control import control_sentences
from rama.probes.datasets import load_dataset
from rama.probes.gather import Gathered, gather
from rama.probes.generalisation import generalisation_matrix
from rama.probes.knowledge import city_fact_accuracy
from rama.probes.probe_metrics import alarm_threshold, label_auroc
from rama.probes.splits import split_by_group
from rama.probes.training import ProbeConfig, best_rows, evaluate, fit_on, layer_of, statement_probabilities

LIMITS = {"cities": 200, "neg_cities": 200, "larger_than": 150, "smaller_than": 150, "comparisons": None,
          "instructed": 100, "roleplay": None, "sycophancy": None}  # fmt: skip
SWEEP_KINDS = ["logistic", "diffmean", "lda", "lat", "ccs"]
LAYERS = [0, 6, 9, 12, 15, 18, 21, 24, 29]
SITES = [f"blocks.{layer}.hook_resid_post" for layer in LAYERS]


def dataset_report(model: HookedModel, name: str, control: Gathered, config: ProbeConfig) -> dict[str, Any]:
    """The layer sweep of one dataset (one model pass), and the control-set recall of its best logistic
    and difference-of-means probes (the control activations gathered once for every dataset)."""
    dataset = load_dataset(name, limit=LIMITS[name], seed=config.seed)
    split = split_by_group(dataset, config.seed, config.val_fraction, config.test_fraction)
    gathered = gather(model, list(dataset.texts), SITES, config.token, config.batch_size, config.progress)
    labels = torch.tensor(dataset.labels)
    rows, probes = [], {}
    for site in SITES:
        for kind in SWEEP_KINDS:
            probe = fit_on(kind, gathered, site, dataset, split.train, config)
            probs = statement_probabilities(probe, gathered.acts[site], gathered.item, len(dataset))
            probes[site, kind] = (probe, probs)
            rows.append({"site": site, "layer": layer_of(site), "kind": kind,
                         "val_auroc": label_auroc(probs[split.val], labels[split.val]),
                         "test_auroc": label_auroc(probs[split.test], labels[split.test])})  # fmt: skip
    best = best_rows(rows)
    recall = {}
    for kind in ("logistic", "diffmean"):
        site = best[kind]["site"]
        probe, probs = probes[site, kind]
        control_p = statement_probabilities(
            probe, control.acts[site], control.item, int(control.item.max()) + 1
        )
        threshold = alarm_threshold(1 - control_p, config.fpr)
        test = evaluate(probs[split.test], labels[split.test], threshold, config.fpr)
        recall[kind] = {"site": site, **{k: v for k, v in test.items() if k != "reliability"}}
    return {"dataset": dataset.summary(), "sweep": rows, "best": best, "at_control_threshold": recall}


def main(argv: list[str] | None = None) -> int:
    import rama

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/probes")
    parser.add_argument("--layer", type=int, default=12, help="layer of the generalisation matrix")
    parser.add_argument("--datasets", nargs="*", default=list(LIMITS))
    parser.add_argument("--skip-knowledge", action="store_true", help="do not ask the model the city facts")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a shared machine: one thread is faster than two contended ones
    model = rama.load("smollm2-135m")
    config = ProbeConfig(progress=False, control=500)
    control_texts = control_sentences(config.control, config.seed)
    control = gather(model, control_texts, SITES, config.token, config.batch_size, config.progress)
    out = Path(args.out)
    results: dict[str, Any] = {"model": "smollm2-135m", "layers": LAYERS, "limits": LIMITS, "datasets": {}}
    if (out / "results.json").is_file():  # resume: datasets already measured are kept
        results["datasets"] = json.loads((out / "results.json").read_text())["datasets"]
    for name in [n for n in args.datasets if n not in results["datasets"]]:
        results["datasets"][name] = dataset_report(model, name, control, config)
        print(
            name,
            {k: round(v["test_auroc"], 3) for k, v in results["datasets"][name]["best"].items()},
            flush=True,
        )
        write_text(out / "results.json", json.dumps(results, indent=1))
    datasets = [load_dataset(n, limit=LIMITS[n], seed=config.seed) for n in args.datasets]
    diffmean = ProbeConfig(**{**config.__dict__, "kind": "diffmean"})
    matrix = generalisation_matrix(model, datasets, f"blocks.{args.layer}.hook_resid_post", diffmean)
    matrix.figure(out / "generalisation.png")
    results["generalisation"] = {"names": matrix.names, "auroc": matrix.auroc, "site": matrix.site, "kind": matrix.kind,
                                 "markdown": matrix.markdown()}  # fmt: skip
    if not args.skip_knowledge:
        results["city_facts_known"] = city_fact_accuracy(model, limit=LIMITS["cities"], seed=config.seed)
    write_text(out / "results.json", json.dumps(results, indent=1))
    print(matrix.markdown())
    print("city facts known:", results.get("city_facts_known"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def results_markdown(results: dict[str, Any]) -> str:
    """The tables of docs/probes.md's SmolLM2 section from `results.json`."""
    kinds = SWEEP_KINDS
    lines = ["| Dataset | Statements | " + " | ".join(kinds) + " |", "|---|---:|" + "---:|" * len(kinds)]
    for name, report in results["datasets"].items():
        cells = [f"{report['best'][k]['test_auroc']:.3f} (L{report['best'][k]['layer']})" for k in kinds]
        lines.append(f"| {name} | {report['dataset']['items']} | " + " | ".join(cells) + " |")
    lines += ["", "| Dataset | logistic: recall at 1 % FPR | threshold | diffmean: recall at 1 % FPR | threshold |",
              "|---|---:|---:|---:|---:|"]  # fmt: skip
    for name, report in results["datasets"].items():
        at = report["at_control_threshold"]
        lines.append(f"| {name} | {at['logistic']['recall_at_1pct_fpr']:.3f} | {at['logistic']['threshold']:.4f} | "
                     f"{at['diffmean']['recall_at_1pct_fpr']:.3f} | {at['diffmean']['threshold']:.4f} |")  # fmt: skip
    return "\n".join(lines)
