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
from rama.probes.generalisation import generalisation_matrix
from rama.probes.knowledge import city_fact_accuracy
from rama.probes.training import ProbeConfig, best_rows, sweep, train_probe

LIMITS = {"cities": 200, "neg_cities": 200, "larger_than": 150, "smaller_than": 150, "comparisons": None,
          "instructed": 100, "roleplay": None, "sycophancy": None}  # fmt: skip
SWEEP_KINDS = ["logistic", "diffmean", "lda", "lat", "ccs"]
LAYERS = [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 29]


def dataset_report(model: HookedModel, name: str, control: list[str], config: ProbeConfig) -> dict[str, Any]:
    dataset = load_dataset(name, limit=LIMITS[name], seed=config.seed)
    sites = [f"blocks.{layer}.hook_resid_post" for layer in LAYERS]
    rows = sweep(model, dataset, sites, SWEEP_KINDS, config)
    best = best_rows(rows)
    recall = {}
    for kind in ("logistic", "diffmean"):
        chosen = ProbeConfig(**{**config.__dict__, "kind": kind})
        trained = train_probe(model, dataset, best[kind]["site"], control, chosen)
        recall[kind] = {
            "site": trained.site,
            **{k: v for k, v in trained.meta["test"].items() if k != "reliability"},
        }
    return {"dataset": dataset.summary(), "sweep": rows, "best": best, "at_control_threshold": recall}


def main(argv: list[str] | None = None) -> int:
    import rama

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/probes")
    parser.add_argument("--layer", type=int, default=12, help="layer of the generalisation matrix")
    parser.add_argument("--datasets", nargs="*", default=list(LIMITS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a shared machine: one thread is faster than two contended ones
    model = rama.load("smollm2-135m")
    config = ProbeConfig(progress=False, control=500)
    control = control_sentences(config.control, config.seed)
    results: dict[str, Any] = {"model": "smollm2-135m", "layers": LAYERS, "limits": LIMITS, "datasets": {}}
    out = Path(args.out)
    for name in args.datasets:
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
    results["city_facts_known"] = city_fact_accuracy(model, limit=LIMITS["cities"], seed=config.seed)
    write_text(out / "results.json", json.dumps(results, indent=1))
    print(matrix.markdown())
    print("city facts known:", results["city_facts_known"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
