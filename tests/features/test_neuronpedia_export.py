"""The Neuronpedia export of a tiny store: every row holds the store's values under Neuronpedia's field
names, the histogram and quantile ranges match a hand computation from the bin edges, a non-empty output
is refused, and a failed export leaves nothing behind."""

from __future__ import annotations

import bisect
import gzip
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from feature_helpers import SITE

from explain_helpers import tiny_store
from rama.errors import OutputError
from rama.features import FeatureStore
from rama.features.neuronpedia_export import (
    EMPTY_FIELDS,
    NeuronpediaConfig,
    default_model_id,
    default_source_id,
    export_neuronpedia,
)

CONFIG = NeuronpediaConfig(batch_size=10, progress=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tiny_store(tmp_path_factory.mktemp("np") / "f.db")
    with FeatureStore(path, writable=True) as db:
        db.set_label(3, "w-words after <s>")
        db.set_explanation(3, "openai:gpt-test", "a common word", "2026-11-30T12:00:00+00:00")
        db.set_explanation(
            4, "delphi", "another", "2026-11-30T12:00:00+00:00", score=0.75, scorer="detection"
        )
    return path


@pytest.fixture(scope="module")
def exported(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_neuronpedia(store, tmp_path_factory.mktemp("out") / "np", CONFIG)


def rows(folder: Path, table: str) -> list[dict[str, Any]]:
    found = []
    for batch in range(3):
        with gzip.open(folder / table / f"batch-{batch}.jsonl.gz", "rt", encoding="utf-8") as handle:
            found += [{**json.loads(line), "batch": batch} for line in handle]
    return found


def test_the_folder_layout_and_source(exported: Path, store: Path) -> None:
    names = sorted(str(p.relative_to(exported)) for p in exported.rglob("*") if p.is_file())
    tables = ("activations", "explanations", "features")
    assert names == [f"{t}/batch-{b}.jsonl.gz" for t in tables for b in range(3)] + ["source.json"]
    source = json.loads((exported / "source.json").read_text())
    with FeatureStore(store) as db:
        assert source["model_id"] == "tiny-llama" and source["source_id"] == "1-res-rama"
        assert source["hook_name"] == SITE and source["d_sae"] == 24
        assert source["sae_fingerprint"] == db.meta["sae_fingerprint"]


def test_feature_rows_hold_the_store_values(exported: Path, store: Path) -> None:
    features = rows(exported, "features")
    assert [f["index"] for f in features] == [str(i) for i in range(24)]
    assert [f["batch"] for f in features] == [i // 10 for i in range(24)]
    with FeatureStore(store) as db:
        for feature in features:
            id = int(feature["index"])
            unit = db.unit(id)
            assert unit is not None
            promoted, suppressed = db.logits(id, "norm"), db.logits(id, "norm", "suppressed")
            cosine = db.neighbours(id, "cosine")
            assert (feature["modelId"], feature["layer"], feature["hookName"]) == (
                "tiny-llama",
                "1-res-rama",
                SITE,
            )
            assert feature["maxActApprox"] == unit["max"] and feature["frac_nonzero"] == unit["density"]
            assert feature["pos_str"] == [t["token"] for t in promoted] and len(promoted) == 3
            assert feature["pos_values"] == [t["value"] for t in promoted]
            assert feature["neg_str"] == [t["token"] for t in suppressed]
            assert (
                feature["neg_values"] == [t["value"] for t in suppressed] and max(feature["neg_values"]) < 0
            )
            assert feature["topkCosSimIndices"] == [n["other"] for n in cosine]
            assert feature["topkCosSimValues"] == [n["value"] for n in cosine]
            assert sum(feature["freq_hist_data_bar_heights"]) == unit["count"]
            assert all(feature[name] == [] for name in EMPTY_FIELDS) and feature["hasVector"] is False
        edges = db.meta["histogram_edges"]
    never, once = features[0], features[18]  # latent 0 never fires, 18 once
    assert never["freq_hist_data_bar_heights"] == [] and never["maxActApprox"] == 0
    b = bisect.bisect_right(edges, once["maxActApprox"])  # its one activation's bin, by hand
    assert once["freq_hist_data_bar_heights"] == [1]
    assert once["freq_hist_data_bar_values"] == [pytest.approx((edges[b - 1] + edges[b]) / 2)]


def test_activation_rows_are_the_stored_examples(exported: Path, store: Path) -> None:
    activations = rows(exported, "activations")
    with FeatureStore(store) as db:
        for id in (0, 3, 12, 18):
            mine = [a for a in activations if a["index"] == str(id)]
            top, quantile = db.examples(id, "top"), db.examples(id, "quantile")
            assert len(mine) == len(top) + len(quantile)
            for row, example in zip(mine, top + quantile, strict=True):
                values = example["activations"]
                assert row["tokens"] == example["tokens"] and row["values"] == values
                assert row["maxValue"] == max(values) and values[row["maxValueTokenIndex"]] == max(values)
                assert row["minValue"] == min(values) and row["qualifyingTokenIndex"] == example["focus"]
                assert row["dataIndex"] == str(example["token_index"] // db.meta["context_size"])
            if top:
                assert mine[0]["maxValue"] == db.unit(id)["max"]  # type: ignore[index]
                assert all(
                    (r["binMin"], r["binMax"], r["binContains"]) == (-1, -1, -1) for r in mine[: len(top)]
                )
            groups: dict[int, float] = {}
            for row, example in zip(mine[len(top) :], quantile, strict=True):
                assert (
                    row["binMin"] <= example["activation"] < row["binMax"]
                    or example["activation"] == row["binMax"]
                )
                groups[example["bin"]] = row["binContains"]
            if len(groups) == 3:  # every firing token falls in one of the groups
                assert sum(groups.values()) == pytest.approx(1.0)


def test_explanation_rows_carry_labels_and_explanations(exported: Path) -> None:
    explanations = [{k: v for k, v in e.items() if k != "batch"} for e in rows(exported, "explanations")]
    key = {"modelId": "tiny-llama", "layer": "1-res-rama"}
    assert explanations == [
        {**key, "index": "3", "description": "w-words after <s>", "typeName": "human",
         "explanationModelName": None, "scoreV1": None, "scoreV2": None},
        {**key, "index": "3", "description": "a common word", "typeName": "openai",
         "explanationModelName": "gpt-test", "scoreV1": None, "scoreV2": None,
         "createdAt": "2026-11-30T12:00:00+00:00"},
        {**key, "index": "4", "description": "another", "typeName": "delphi", "explanationModelName": None,
         "scoreV1": 0.75, "scoreV2": None, "createdAt": "2026-11-30T12:00:00+00:00"},
    ]  # fmt: skip


def test_names_and_repeatable_bytes(store: Path, exported: Path, tmp_path: Path) -> None:
    assert default_model_id("HuggingFaceTB/SmolLM2-135M") == "smollm2-135m"
    assert default_source_id("blocks.6.hook_resid_post") == "6-res-rama"
    assert default_source_id("blocks.2.hook_mlp_out") == "2-mlp-rama"
    assert default_source_id("blocks.3.attn.hook_z") == "3-att-rama"
    assert default_source_id("embed.hook_out") == "embed-hook-out-rama"
    again = export_neuronpedia(store, tmp_path / "again", CONFIG)
    for path in exported.rglob("*.gz"):
        assert (again / path.relative_to(exported)).read_bytes() == path.read_bytes()
    named = export_neuronpedia(
        store, tmp_path / "named", NeuronpediaConfig(model_id="m", source_id="s", progress=False)
    )
    assert rows_one(named)["modelId"] == "m" and rows_one(named)["layer"] == "s"


def rows_one(folder: Path) -> dict[str, Any]:
    with gzip.open(folder / "features" / "batch-0.jsonl.gz", "rt") as handle:
        return dict(json.loads(handle.readline()))


def test_a_non_empty_output_is_refused(store: Path, tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="already holds files"):
        export_neuronpedia(store, tmp_path / "busy", CONFIG)
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    assert (export_neuronpedia(store, tmp_path / "empty", CONFIG) / "source.json").is_file()


def test_a_failed_export_leaves_nothing(store: Path, tmp_path: Path) -> None:
    damaged = Path(shutil.copy(store, tmp_path / "damaged.db"))
    with sqlite3.connect(damaged) as connection:  # a late latent's example no longer parses
        connection.execute("UPDATE examples SET tokens = '[\"w3\", ' WHERE unit = 20")
    connection.close()
    (tmp_path / "out").mkdir()
    with pytest.raises(json.JSONDecodeError):
        export_neuronpedia(damaged, tmp_path / "out" / "np", CONFIG)
    assert list((tmp_path / "out").iterdir()) == []  # no folder, no staging left
