"""SmolLM2 results docs/probes.md adds to `report.py`'s: k-sparse probes on a trained SAE's latents
(SAEBench style, against a logistic probe on the raw activations at the same site), reliability curves
of the logistic and difference-of-means probes on held-out statements, and, per built-in dataset, the
share of contrast pairs whose true statement the model itself finds likelier.

    python -m rama.probes.extra_report --sae /work/artifacts/sae-l9-4608 --out docs/probes
        [--parts ksparse reliability preference]

Writes (updates) `extra.json` and `reliability.png` in `--out`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from rama.atomic import write_text
from rama.hooks.model import HookedModel
from rama.plotting import pyplot, save_figure
from rama.probes.datasets import load_dataset
from rama.probes.gather import gather
from rama.probes.knowledge import pair_preference
from rama.probes.probe_metrics import label_auroc, reliability
from rama.probes.report import LIMITS
from rama.probes.splits import split_by_group
from rama.probes.training import ProbeConfig, fit_on, site_rows, statement_probabilities
from rama.sae import SAE

SPARSE_KS = (1, 2, 4, 16, 64)
RELIABILITY_SETS = ("cities", "neg_cities", "larger_than")
RELIABILITY_LIMITS = {"cities": 200, "neg_cities": 200, "larger_than": 150}
RELIABILITY_LAYER = 12


def ksparse_rows(model: HookedModel, sae: SAE, config: ProbeConfig, limit: int = 200) -> dict[str, Any]:
    """Validation and test AUROC of k-sparse probes on the SAE's latents for each k in `SPARSE_KS`, and of
    a logistic probe on the raw activations at the SAE's site, on the first `limit` cities."""
    dataset = load_dataset("cities", limit=limit, seed=config.seed)
    split = split_by_group(dataset, config.seed, config.val_fraction, config.test_fraction)
    site = sae.cfg.hook_name
    gathered = gather(model, list(dataset.texts), [site], config.token, config.batch_size, config.progress)
    labels = torch.tensor(dataset.labels)

    def scored(kind: str, k: int, with_sae: SAE | None) -> dict[str, Any]:
        probe = fit_on(kind, gathered, site, dataset, split.train, replace(config, k=k), with_sae)
        rows = site_rows(gathered, site, with_sae)
        probs = statement_probabilities(probe, rows, gathered.item, len(dataset))
        record: dict[str, Any] = {"kind": kind, "k": k if with_sae is not None else None,
                                  "val_auroc": label_auroc(probs[split.val], labels[split.val]),
                                  "test_auroc": label_auroc(probs[split.test], labels[split.test])}  # fmt: skip
        if probe.latents is not None:
            record["latents"] = probe.latents.tolist()
            record["weights"] = probe.direction.tolist()
        return record

    rows = [scored("ksparse", k, sae) for k in SPARSE_KS]
    rows.append(scored("logistic", config.k, None))
    return {"site": site, "dataset": dataset.summary(), "rows": rows}


def reliability_curves(model: HookedModel, config: ProbeConfig) -> dict[str, Any]:
    """Per dataset in `RELIABILITY_SETS`: the test split's reliability curve and ECE of a logistic and a
    difference-of-means probe at `RELIABILITY_LAYER`, trained on the train split."""
    site = f"blocks.{RELIABILITY_LAYER}.hook_resid_post"
    curves: dict[str, Any] = {}
    for name in RELIABILITY_SETS:
        dataset = load_dataset(name, limit=RELIABILITY_LIMITS[name], seed=config.seed)
        split = split_by_group(dataset, config.seed, config.val_fraction, config.test_fraction)
        gathered = gather(
            model, list(dataset.texts), [site], config.token, config.batch_size, config.progress
        )
        labels = torch.tensor(dataset.labels)
        curves[name] = {}
        for kind in ("logistic", "diffmean"):
            probe = fit_on(kind, gathered, site, dataset, split.train, config)
            probs = statement_probabilities(probe, gathered.acts[site], gathered.item, len(dataset))
            curve = reliability(probs[split.test], labels[split.test])
            curves[name][kind] = {**curve.__dict__, "ece": curve.ece(), "items": len(split.test)}
    return {"site": site, "curves": curves}


def reliability_figure(result: dict[str, Any], path: str | Path) -> Path:
    """One panel per dataset: share of true statements against mean p per bin, a marker's area ∝ its
    bin's count, the diagonal is perfect calibration."""
    plt = pyplot()
    names = list(result["curves"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
        for kind, colour in (("logistic", "tab:blue"), ("diffmean", "tab:orange")):
            curve = result["curves"][name][kind]
            kept = [i for i, n in enumerate(curve["counts"]) if n]
            xs = [curve["confidence"][i] for i in kept]
            ys = [curve["frequency"][i] for i in kept]
            ax.plot(xs, ys, color=colour, lw=1.2, label=f"{kind} (ECE {curve['ece']:.3f})")
            ax.scatter(xs, ys, s=[12 * curve["counts"][i] for i in kept], color=colour, alpha=0.5)
        items = result["curves"][name]["logistic"]["items"]
        ax.set(
            xlim=(-0.03, 1.03),
            ylim=(-0.03, 1.03),
            xlabel="probe's p (mean per bin)",
            title=f"{name} ({items} test statements)",
        )
        ax.set_aspect("equal")
        ax.legend(loc="upper left", fontsize=8)
    axes[0][0].set_ylabel("share of true statements")
    fig.suptitle(f"Reliability on held-out statements, {result['site']} (marker area ∝ statements in the bin)",
                 fontsize=10)  # fmt: skip
    return save_figure(fig, path)


def preferences(model: HookedModel, seed: int = 0) -> dict[str, float]:
    """`pair_preference` of every built-in dataset, at the statement counts of `report.py`."""
    return {
        name: pair_preference(model, load_dataset(name, limit=limit, seed=seed))
        for name, limit in LIMITS.items()
    }


def main(argv: list[str] | None = None) -> int:
    import rama

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sae", help="a trained SAE folder on SmolLM2 (its site is probed; for ksparse)")
    parser.add_argument("--out", default="docs/probes")
    parser.add_argument("--parts", nargs="*", default=["ksparse", "reliability", "preference"])
    args = parser.parse_args(argv)
    if "ksparse" in args.parts and not args.sae:
        parser.error("the ksparse part needs --sae")
    torch.set_num_threads(1)  # a shared machine: one thread is faster than two contended ones
    model = rama.load("smollm2-135m")
    config = ProbeConfig(progress=False)
    out = Path(args.out)
    results = json.loads((out / "extra.json").read_text()) if (out / "extra.json").is_file() else {}
    if "ksparse" in args.parts:
        results["ksparse"] = ksparse_rows(model, SAE.load(args.sae), config)
        for row in results["ksparse"]["rows"]:
            print(row["kind"], row["k"], round(row["val_auroc"], 3), round(row["test_auroc"], 3))
    if "reliability" in args.parts:
        results["reliability"] = reliability_curves(model, config)
        reliability_figure(results["reliability"], out / "reliability.png")
    if "preference" in args.parts:
        results["preference"] = preferences(model, config.seed)
        print(results["preference"])
    write_text(out / "extra.json", json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
