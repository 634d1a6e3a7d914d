"""A feature store as Neuronpedia's feature, activation and explanation rows (gzipped JSON lines).

Neuronpedia keys a feature by (`modelId`, `layer`, `index`), where `layer` is its source id (such as
`6-res-jb`) and `index` the latent's number as a string. `export_neuronpedia` writes one row per latent
(`features/`), one per top or quantile example (`activations/`) and one per explanation or human label
(`explanations/`), in batches of latents, into a fresh folder that appears only when it is complete.
The fields are listed in docs/features.md; those rama does not compute are written empty.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rama.atomic import check_empty_output, staged_folder
from rama.errors import ConfigError
from rama.features.analysis import setting
from rama.features.store import FeatureStore
from rama.features.summaries import quantile_groups

EMPTY_FIELDS = (  # Neuronpedia fields rama does not compute: written as empty lists
    "logits_hist_data_bar_heights", "logits_hist_data_bar_values", "decoder_weights_dist", "vector",
    "correlated_features_indices", "correlated_features_pearson", "correlated_features_l1",
    "correlated_neurons_indices", "correlated_neurons_pearson", "correlated_neurons_l1",
    "neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
)  # fmt: skip
SITE_KINDS = {"hook_resid_pre": "res", "hook_resid_mid": "res", "hook_resid_post": "res",
              "hook_mlp_out": "mlp", "hook_attn_out": "att", "attn.hook_z": "att"}  # fmt: skip
TOP_BIN = -1  # binMin, binMax and binContains of a top example (not from a quantile group)


@dataclass(frozen=True)
class NeuronpediaConfig:
    """How the export names the SAE for Neuronpedia (the options of `rama features export`)."""

    model_id: str = setting(
        "", "Neuronpedia's modelId (default: the store's model name, last path part, lower case)"
    )
    source_id: str = setting("", "Neuronpedia's source id, the `layer` field (default: e.g. 6-res-rama)")
    batch_size: int = setting(1024, "latents per batch file")
    progress: bool = setting(True, "show a progress bar")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, not {self.batch_size}")


def default_model_id(model_name: str) -> str:
    """`HuggingFaceTB/SmolLM2-135M` -> `smollm2-135m`; `smollm2-135m` stays as it is."""
    return Path(str(model_name).rstrip("/")).name.lower() or "model"


def default_source_id(site: str) -> str:
    """`blocks.6.hook_resid_post` -> `6-res-rama`, `blocks.2.hook_mlp_out` -> `2-mlp-rama`."""
    found = re.fullmatch(r"blocks\.(\d+)\.(.+)", site)
    if found is None:
        return f"{re.sub(r'[^a-z0-9]+', '-', site.lower()).strip('-')}-rama"
    return f"{found.group(1)}-{SITE_KINDS.get(found.group(2), 'sae')}-rama"


@dataclass(frozen=True)
class NeuronpediaKey:
    """The (modelId, layer) pair every row carries, with the store's facts the rows need."""

    model_id: str
    source_id: str
    hook_name: str
    edges: list[float]
    quantiles: int
    context_size: int

    def row(self, id: int) -> dict[str, Any]:
        return {"modelId": self.model_id, "layer": self.source_id, "index": str(id)}


def histogram_bars(key: NeuronpediaKey, counts: list[int], maximum: float) -> tuple[list[float], list[int]]:
    """Neuronpedia's activation histogram (bar centres, heights) from the store's log-spaced bins,
    from the first non-empty bin to the last; a bar's centre is the middle of its bin, the open
    first bin running from 0 and the open last one up to the unit's max."""
    filled = [b for b, count in enumerate(counts) if count]
    if not filled:
        return [], []
    bins = range(filled[0], filled[-1] + 1)
    return [sum(bin_bounds(key.edges, b, maximum)) / 2 for b in bins], [counts[b] for b in bins]


def bin_bounds(edges: list[float], b: int, maximum: float) -> tuple[float, float]:
    low = 0.0 if b == 0 else edges[b - 1]
    high = max(maximum, edges[-1]) if b == len(edges) else edges[b]
    return low, high


def feature_row(store: FeatureStore, key: NeuronpediaKey, id: int, unit: dict[str, Any]) -> dict[str, Any]:
    """One Neuronpedia feature (its `Neuron` row) for latent `id`."""
    promoted, suppressed = store.logits(id, "norm", "promoted"), store.logits(id, "norm", "suppressed")
    cosine = store.neighbours(id, "cosine")
    bar_values, bar_heights = histogram_bars(key, unit["histogram"], unit["max"])
    return {
        **key.row(id),
        "hookName": key.hook_name,
        "maxActApprox": unit["max"],
        "frac_nonzero": unit["density"],
        "pos_str": [t["token"] for t in promoted],
        "pos_values": [t["value"] for t in promoted],
        "neg_str": [t["token"] for t in suppressed],
        "neg_values": [t["value"] for t in suppressed],
        "freq_hist_data_bar_values": bar_values,
        "freq_hist_data_bar_heights": bar_heights,
        "topkCosSimIndices": [n["other"] for n in cosine],
        "topkCosSimValues": [n["value"] for n in cosine],
        "hasVector": False,
        **{name: [] for name in EMPTY_FIELDS},
    }


def quantile_ranges(key: NeuronpediaKey, unit: dict[str, Any]) -> dict[int, tuple[float, float, float]]:
    """Per quantile group: (binMin, binMax, binContains), the activation range of its histogram bins
    and the share of the unit's firing tokens that fall in them."""
    groups = quantile_groups(torch.tensor(unit["histogram"]), key.quantiles).tolist()
    ranges: dict[int, tuple[float, float, float]] = {}
    for group in sorted(set(groups) - {-1}):
        bins = [b for b, g in enumerate(groups) if g == group]
        low = bin_bounds(key.edges, bins[0], unit["max"])[0]
        high = bin_bounds(key.edges, bins[-1], unit["max"])[1]
        share = sum(unit["histogram"][b] for b in bins) / max(unit["count"], 1)
        ranges[group] = (low, high, share)
    return ranges


def activation_rows(
    store: FeatureStore, key: NeuronpediaKey, id: int, unit: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """Neuronpedia activations for latent `id`: its top examples, then its quantile samples."""
    ranges = quantile_ranges(key, unit)
    for sample in ("top", "quantile"):
        for example in store.examples(id, sample):
            values = example["activations"]
            peak = max(range(len(values)), key=lambda i: (values[i], -i))
            low, high, share = (TOP_BIN, TOP_BIN, TOP_BIN) if sample == "top" else ranges[example["bin"]]
            yield {
                **key.row(id),
                "dataIndex": str(example["token_index"] // key.context_size),
                "tokens": example["tokens"],
                "values": values,
                "maxValue": values[peak],
                "maxValueTokenIndex": peak,
                "minValue": min(values),
                "qualifyingTokenIndex": example["focus"],
                "binMin": low,
                "binMax": high,
                "binContains": share,
                "dfaValues": [],
            }


def explanation_rows(
    store: FeatureStore, key: NeuronpediaKey, id: int, label: str
) -> Iterator[dict[str, Any]]:
    """The human label (typeName `human`) and every saved explanation, `openai:MODEL` split into
    typeName `openai` and explanationModelName `MODEL`."""
    if label:
        yield {**key.row(id), "description": label, "typeName": "human", "explanationModelName": None,
               "scoreV1": None, "scoreV2": None}  # fmt: skip
    for explanation in store.explanations(id):
        kind, _, model = explanation["source"].partition(":")
        yield {**key.row(id), "description": explanation["text"], "typeName": kind,
               "explanationModelName": model or None, "scoreV1": explanation["score"], "scoreV2": None,
               "createdAt": explanation["created"]}  # fmt: skip


def write_jsonl_gz(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as gzipped JSON lines; mtime 0 so the same store always gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed:
        for row in rows:
            packed.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")


def export_neuronpedia(
    store_path: str | Path, out: str | Path, config: NeuronpediaConfig = NeuronpediaConfig()
) -> Path:
    """Write every latent of the store as Neuronpedia rows into the new folder `out` (refused when it
    already holds files); the folder appears, complete, only at the end."""
    final = check_empty_output(out)
    with FeatureStore(store_path) as store, staged_folder(final) as staging:
        meta = store.meta
        key = NeuronpediaKey(
            model_id=config.model_id or default_model_id(meta["model_name"]),
            source_id=config.source_id or default_source_id(meta["site"]),
            hook_name=meta["site"], edges=list(meta["histogram_edges"]),
            quantiles=int(meta["config"]["quantiles"]), context_size=int(meta["context_size"]),
        )  # fmt: skip
        d_sae = int(meta["d_sae"])
        with tqdm(total=d_sae, desc="neuronpedia export", unit="latent", disable=not config.progress) as bar:
            for batch, start in enumerate(range(0, d_sae, config.batch_size)):
                rows: dict[str, list[dict[str, Any]]] = {
                    "features": [],
                    "activations": [],
                    "explanations": [],
                }
                for id in range(start, min(start + config.batch_size, d_sae)):
                    unit = store.unit(id)
                    if unit is None:
                        continue
                    rows["features"].append(feature_row(store, key, id, unit))
                    rows["activations"] += activation_rows(store, key, id, unit)
                    rows["explanations"] += explanation_rows(store, key, id, unit["label"])
                    bar.update()
                for table, table_rows in rows.items():
                    write_jsonl_gz(staging / table / f"batch-{batch}.jsonl.gz", table_rows)
        manifest = {"model_id": key.model_id, "source_id": key.source_id, "hook_name": key.hook_name,
                    "d_sae": d_sae, "model_name": meta["model_name"], "sae_fingerprint": meta["sae_fingerprint"],
                    "tokens": meta["tokens"], "context_size": key.context_size, "batch_size": config.batch_size,
                    "rama_version": meta.get("rama_version")}  # fmt: skip
        (staging / "source.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return final
