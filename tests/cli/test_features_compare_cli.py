"""`rama features compare` and `rama features score` end to end on a real store of a tiny Llama (its
latents and its 64 MLP neurons): what they print and write equals the library's numbers, scores are
saved in the store, and bad input is one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cli_helpers import rama_in_process
from features.feature_helpers import tiny_model, tiny_sae, token_rows
from rama.activations.sentence_embeddings import sentence_embedder
from rama.features import BuildConfig, FeatureStore, build
from rama.features.detection_scoring import DETECTION_SCORER, DetectionScorer
from rama.features.monosemanticity import CompareConfig, compare_units, token_concentration

pytestmark = pytest.mark.slow  # loads MiniLM

MEASURES = ["--top-k", "4", "--coherence-units", "4", "--baseline-sets", "300", "--no-progress"]
CREATED = "2026-11-30T00:00:00+00:00"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = BuildConfig(batch_size=6, top_k=4, context_left=4, context_right=2, quantiles=2, per_quantile=1,
                         logit_tokens=3, neighbours=3, progress=False)  # fmt: skip
    return build(tiny_sae(), tiny_model(), tokens=token_rows(), out=tmp_path_factory.mktemp("cmp") / "f.db",
                 config=config)  # fmt: skip


def test_compare_prints_the_table_and_writes_the_library_numbers(store: Path, tmp_path: Path) -> None:
    result = rama_in_process("features", "compare", str(store), "--out", str(tmp_path / "c"), *MEASURES)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["features", "neurons"] and lines[1].startswith(
        "units (dead / rare, left out)"
    )
    assert lines[-1] == f"wrote {tmp_path / 'c' / 'compare.json'} and {tmp_path / 'c' / 'compare.png'}"
    record = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert (tmp_path / "c" / "compare.png").read_bytes().startswith(b"\x89PNG")
    config = CompareConfig(top_k=4, coherence_units=4, baseline_sets=300, progress=False)
    with FeatureStore(store) as db:
        expected = compare_units(db, sentence_embedder(), config)
        latent = next(u for u in record["units"] if u["kind"] == "latent")
        focus_tokens = [e["token_ids"][e["focus"]] for e in db.examples(latent["id"])]
    assert record["summary"] == json.loads(json.dumps(expected.summary()))
    assert record["summary"]["latent"]["total"] == 24 and record["summary"]["neuron"]["total"] == 64
    assert record["site"] == "blocks.1.hook_resid_post" and record["neuron_site"] == "blocks.1.mlp.hook_post"
    assert (latent["concentration"], latent["entropy_bits"]) == pytest.approx(
        token_concentration(focus_tokens)
    )
    assert sum(u["coherence"] is not None for u in record["units"]) == 8  # 4 latents and 4 neurons

    as_json = rama_in_process(
        "features", "compare", str(store), "--out", str(tmp_path / "j"), "--json", *MEASURES
    )
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["summary"] == record["summary"]
    assert as_json.stderr.strip().endswith("compare.png")


def test_score_saves_each_explanations_auroc(store: Path, tmp_path: Path) -> None:
    db = Path(shutil.copy(store, tmp_path / "s.db"))
    with FeatureStore(db, writable=True) as writable:
        live = [row["id"] for row in writable.units_page(limit=24) if row["count"] > 0][:3]
        for unit in live:
            writable.set_explanation(unit, "hand", f"w{unit + 10} and w{unit + 20}", CREATED)
        writable.set_label(live[0], "the words w3 to w96")
    result = rama_in_process("features", "score", str(db), "--source", "hand", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith(
        "scored 3 explanations from 'hand' with detection-minilm: mean"
    )
    with FeatureStore(db) as reader:
        scorer = DetectionScorer(reader, embedder=sentence_embedder())
        for unit in live:
            [saved] = reader.explanations(unit)
            assert saved["scorer"] == DETECTION_SCORER
            assert saved["score"] == pytest.approx(scorer.score(unit, saved["text"]).auroc)
            assert f"latent {unit}: AUROC {saved['score']:.3f}" in result.stdout
    labels = rama_in_process("features", "score", str(db), "--label", "--no-progress")
    assert labels.returncode == 0 and "scored 1 explanations from 'human-label'" in labels.stdout


def test_bad_input_is_one_line(store: Path, tmp_path: Path) -> None:
    def error(*args: str) -> str:
        result = rama_in_process("features", *args)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        [line] = result.stderr.strip().splitlines()
        return line

    assert "no feature store there" in error("compare", str(tmp_path / "missing.db"))
    assert "top_k must be ≥ 2" in error("compare", str(store), "--top-k", "1")
    assert "either --source SOURCE" in error("score", str(store))
    assert "either --source SOURCE" in error("score", str(store), "--source", "x", "--label")
    assert "no latent explanations from 'nobody'" in error("score", str(store), "--source", "nobody")
    assert "has no human labels on its latents" in error("score", str(store), "--label")
