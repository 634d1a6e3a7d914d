"""Feature stores built from a tiny Llama: the numbers read back equal a direct computation, the file
is written atomically, and foreign, truncated or mismatched files are clear RamaErrors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch
from feature_helpers import SITE, tiny_model, tiny_sae, token_rows

from rama.errors import OutputError, RamaError
from rama.features import BuildConfig, FeatureStore, StoreError, StoreMismatchError, analyse, build, builder
from rama.features.logit_effects import model_logit_effects
from rama.features.summaries import quantile_examples, top_examples
from rama.hooks.model import HookedModel
from rama.sae import SAE

CONFIG = BuildConfig(batch_size=5, top_k=6, context_left=3, context_right=2, logit_tokens=4, neighbours=3,
                     progress=False)  # fmt: skip


@pytest.fixture(scope="module")
def model() -> HookedModel:
    return tiny_model()


@pytest.fixture(scope="module")
def store(model: HookedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(
        tiny_sae(), model, tokens=token_rows(), out=tmp_path_factory.mktemp("s") / "f.db", config=CONFIG
    )


def test_store_holds_what_a_direct_computation_gives(model: HookedModel, store: Path) -> None:
    sae, tokens = tiny_sae(), token_rows()
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, [SITE, "blocks.1.mlp.hook_post"])
        codes = sae.encode(cache[SITE])
    codes[:, 0] = 0  # the BOS position is left out
    with FeatureStore(store, sae=sae) as db:
        assert db.meta["tokens"] == 24 * 15 and db.meta["site"] == SITE and db.meta["n_neurons"] == 64
        for latent in (0, 3, 11, 18):  # 0 never fires, 18 once
            column = codes[..., latent].flatten()
            row = db.unit(latent)
            assert row is not None
            assert row["density"] == pytest.approx(float((column > 0).sum()) / (24 * 15))
            assert row["max"] == pytest.approx(float(column.max()))
            assert sum(row["histogram"]) == row["count"] == int((column > 0).sum())
            top = db.examples(latent, "top")
            values, index = column.sort(descending=True, stable=True)
            assert [e["activation"] for e in top] == values[: len(top)].tolist()
            assert [e["token_index"] for e in top] == index[: len(top)].tolist()
            assert len(top) == min(CONFIG.top_k, row["count"])
            if not top:
                continue
            first = top[0]
            assert first["tokens"][first["focus"]] == f"w{tokens.flatten()[first['token_index']]}"
            assert first["activations"][first["focus"]] == first["activation"]
        neuron = db.unit(7, kind="neuron")
        assert neuron is not None and neuron["max"] == pytest.approx(
            float(cache["blocks.1.mlp.hook_post"][:, 1:, 7].max())
        )
        effects = model_logit_effects(model, sae.W_dec, n=4)
        assert [t["token_id"] for t in db.logits(3, "norm")] == effects["norm"].promoted_ids[3].tolist()
        assert [t["token_id"] for t in db.logits(3, "direct", "suppressed")] == effects[
            "direct"
        ].suppressed_ids[3].tolist()
        assert len(db.neighbours(3, "cosine")) == 3 and len(db.neighbours(3, "cofiring")) == 3
        assert db.unit(24) is None


def test_quantile_examples_in_the_store_match_the_analysis(model: HookedModel, store: Path) -> None:
    analysis = analyse(tiny_sae(), model, token_rows(), config=CONFIG)
    with FeatureStore(store) as db:
        for latent in (3, 12):
            stored = db.examples(latent, "quantile")
            expected = quantile_examples(analysis.latents, latent, CONFIG.quantiles, CONFIG.per_quantile)
            assert [(e["bin"], e["activation"], e["token_index"]) for e in stored] == [
                (e.bin, e.activation, e.token_index) for e in expected
            ]
            assert len({e["bin"] for e in stored}) > 1
        assert [e.activation for e in top_examples(analysis.latents, 12)] == [
            e["activation"] for e in db.examples(12)
        ]


def test_two_halves_merged_equal_one_pass(model: HookedModel) -> None:
    tokens, sae = token_rows(), tiny_sae()
    whole = analyse(sae, model, tokens, config=CONFIG)
    half = analyse(sae, model, tokens[:11], config=CONFIG)
    half.absorb(analyse(sae, model, tokens[11:], config=CONFIG, first_row=11))
    for kind in ("latents", "neurons"):
        a, b = getattr(half, kind), getattr(whole, kind)
        assert torch.equal(a.hist, b.hist) and torch.equal(a.max, b.max) and a.tokens == b.tokens
        assert torch.equal(a.top.keys, b.top.keys) and torch.equal(a.top.acts, b.top.acts)
        assert torch.equal(a.samples.token_index, b.samples.token_index)
    assert half.cofiring is not None and whole.cofiring is not None
    assert torch.equal(half.cofiring.pairs, whole.cofiring.pairs)
    ranks = [analyse(sae, model, tokens, config=CONFIG, rank=r, world_size=3) for r in range(3)]
    ranks[2].absorb(ranks[0])
    ranks[2].absorb(ranks[1])
    assert torch.equal(ranks[2].latents.top.keys, whole.latents.top.keys)
    assert torch.equal(ranks[2].neurons.samples.acts, whole.neurons.samples.acts)  # type: ignore[union-attr]
    assert torch.equal(ranks[2].latents.hist, whole.latents.hist)


def test_labels_and_search(model: HookedModel, store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "labels.db"
    copy.write_bytes(store.read_bytes())
    with FeatureStore(copy, writable=True) as db:
        db.set_label(4, "Harbour 100% words")
        assert db.by_label("harbour 100%") == [4] and db.by_label("100_") == []
        token = db.logits(4)[0]["token"]
        assert 4 in [hit["unit"] for hit in db.by_promoted_token(token)]
        with pytest.raises(StoreError, match="no latent 99"):
            db.set_label(99, "x")
    with FeatureStore(store) as db, pytest.raises(sqlite3.OperationalError, match="readonly"):
        db.set_label(4, "x")


def test_paged_listing_and_explanations(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "explained.db"
    copy.write_bytes(store.read_bytes())
    with FeatureStore(copy, writable=True) as db:
        every = [db.unit(i) for i in range(db.count())]
        by_density = sorted(every, key=lambda u: (-u["density"], u["id"]))  # type: ignore[index]
        page = db.units_page(sort="density", descending=True, offset=2, limit=3)
        assert [u["id"] for u in page] == [u["id"] for u in by_density[2:5]]  # type: ignore[index]
        db.set_label(3, "ships_and 50%")
        assert db.count(label_contains="and 50%") == 1 and db.count(label_contains="and_") == 0
        assert [u["id"] for u in db.units_page(label_contains="SHIPS")] == [3]
        with pytest.raises(StoreError, match="cannot sort units by 'density; DROP'"):
            db.units_page(sort="density; DROP")
        db.set_explanation(3, "llm:m", "ships", created="2026-11-30T00:00:00Z")
        db.set_explanation_score(3, "llm:m", 0.75, scorer="detection-minilm")
        assert db.explanations(3) == [
            {"source": "llm:m", "text": "ships", "score": 0.75, "scorer": "detection-minilm",
             "created": "2026-11-30T00:00:00Z"}
        ]  # fmt: skip
        assert db.explained("llm:m") == {3} and db.explained("other") == set()
        with pytest.raises(StoreError, match="no latent 99"):
            db.set_explanation(99, "llm:m", "x", created="")
        with pytest.raises(StoreError, match="no explanation of latent 4"):
            db.set_explanation_score(4, "llm:m", 0.5, scorer="x")


def test_existing_store_is_refused_unless_replace(model: HookedModel, store: Path) -> None:
    before = store.read_bytes()
    with pytest.raises(OutputError, match="--replace"):
        build(tiny_sae(), model, tokens=token_rows(), out=store, config=CONFIG)
    assert store.read_bytes() == before
    other = tiny_sae(seed=1)
    copy = store.parent / "replaced.db"
    copy.write_bytes(before)
    build(other, model, tokens=token_rows(rows=10), out=copy, config=CONFIG, replace=True)
    with FeatureStore(copy, sae=other) as db:
        assert db.meta["tokens"] == 10 * 15


def test_interrupted_build_leaves_nothing(
    model: HookedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(builder, "write_neighbours", fail)
    with pytest.raises(KeyboardInterrupt):
        build(tiny_sae(), model, tokens=token_rows(rows=5), out=tmp_path / "f.db", config=CONFIG)
    assert list(tmp_path.iterdir()) == []


def test_mismatched_foreign_and_damaged_files_are_rama_errors(store: Path, tmp_path: Path) -> None:
    with pytest.raises(StoreMismatchError, match="another SAE"):
        FeatureStore(store, sae=tiny_sae(seed=1))
    retitled = tiny_sae()
    retitled.cfg.hook_name = "blocks.0.hook_resid_post"
    with pytest.raises(StoreMismatchError):
        FeatureStore(store, sae=retitled)
    cases = {
        "missing.db": None,
        "text.db": b"hello, not a database" * 10,
        "truncated.db": store.read_bytes()[:6000],
    }
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(StoreError):
            FeatureStore(tmp_path / name)
    plain = tmp_path / "plain.db"
    with sqlite3.connect(plain) as connection:
        connection.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="not a rama feature store"):
        FeatureStore(plain)
    assert issubclass(StoreError, RamaError)


def test_transcoder_examples_from_its_input_logits_from_its_decoder(
    model: HookedModel, tmp_path: Path
) -> None:
    transcoder = tiny_sae(
        site="blocks.0.ln2.hook_normalized", d_out=32, hook_name_out="blocks.0.hook_mlp_out"
    )
    assert transcoder.cfg.is_transcoder
    tokens = token_rows(rows=8)
    out = build(transcoder, model, tokens=tokens, out=tmp_path / "t.db", config=CONFIG)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, ["blocks.0.ln2.hook_normalized"])
        codes = transcoder.encode(cache["blocks.0.ln2.hook_normalized"])[:, 1:]
    with FeatureStore(out, sae=transcoder) as db:
        assert (
            db.meta["neuron_site"] == "blocks.0.mlp.hook_post"
            and db.meta["site_out"] == "blocks.0.hook_mlp_out"
        )
        assert db.examples(1)[0]["activation"] == float(codes[..., 1].max())
        effects = model_logit_effects(model, transcoder.W_dec, n=4)
        assert [t["token_id"] for t in db.logits(1)] == effects["norm"].promoted_ids[1].tolist()


def test_sae_folder_and_bad_fit(model: HookedModel, tmp_path: Path) -> None:
    sae = tiny_sae()
    sae.save(tmp_path / "sae")
    out = build(tmp_path / "sae", model, tokens=token_rows(rows=5), out=tmp_path / "f.db", config=CONFIG)
    with FeatureStore(out, sae=SAE.load(tmp_path / "sae")) as db:
        assert db.meta["d_sae"] == 24 and db.meta["sae_path"] == str((tmp_path / "sae").resolve())
    wrong = tiny_sae(site="blocks.1.attn.hook_z")
    with pytest.raises(RamaError, match="width"):
        build(wrong, model, tokens=token_rows(rows=5), out=tmp_path / "g.db", config=CONFIG)
