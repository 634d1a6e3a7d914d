"""Statement activations, training, portable probe files and the generalisation matrix on a tiny
word-level Llama (a real HF model with a real tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from probe_helpers import control_words, word_statements

from features.feature_helpers import tiny_model, tiny_sae
from rama.errors import InputError
from rama.hooks.model import HookedModel
from rama.probes import (
    ProbeConfig,
    ProbeDataset,
    ProbeMismatchError,
    check_probe_fits,
    gather,
    generalisation_matrix,
    label_auroc,
    load_probe,
    save_probe,
    score_dataset,
    split_by_group,
    train_probe,
)
from rama.probes.training import fit_on, statement_probabilities

SITE = "blocks.1.hook_resid_post"
CONFIG = ProbeConfig(kind="diffmean", progress=False, control=40)


@pytest.fixture(scope="module")
def model() -> HookedModel:
    return tiny_model()


def test_token_selections_by_hand(model: HookedModel) -> None:
    texts = ["w5 w6 w7", "w8 w9", "w10 [[w11 w12]] w13"]
    clean = ["w5 w6 w7", "w8 w9", "w10 w11 w12 w13"]
    full = {i: model.run_with_cache(t, [SITE])[1][SITE][0] for i, t in enumerate(clean)}  # [pos, d] each
    last = gather(model, texts[:2], [SITE], "last").acts[SITE]
    assert torch.allclose(last[0], full[0][-1], atol=1e-5) and torch.allclose(last[1], full[1][-1], atol=1e-5)
    mean = gather(model, texts[:2], [SITE], "mean").acts[SITE]
    assert torch.allclose(mean[0], full[0][1:].mean(0), atol=1e-5)  # position 0 left out
    span = gather(model, texts[2:], [SITE], "span").acts[SITE]
    assert torch.allclose(span[0], full[2][1:3].mean(0), atol=1e-5)  # w11 w12
    every = gather(model, texts[:2], [SITE], "every")
    assert every.item.tolist() == [0, 0, 1]  # positions 1, 2 of the first, 1 of the second
    assert torch.allclose(every.acts[SITE][2], full[1][1], atol=1e-5)
    layers = gather(model, texts[:2], ["blocks.*.hook_resid_post"], "last").acts
    assert sorted(layers) == ["blocks.0.hook_resid_post", SITE]
    with pytest.raises(InputError, match="exactly one span"):
        gather(model, ["w5 w6"], [SITE], "span")


def test_nan_activations_are_refused() -> None:
    broken = tiny_model()
    with torch.no_grad():
        broken.hf.model.embed_tokens.weight[7] = float("nan")
    with pytest.raises(InputError, match="NaN or infinite values in 1 of 2 rows"):
        gather(broken, ["w5 w6", "w5 w7"], [SITE], "last")


def test_train_save_load_and_refuse_another_model(model: HookedModel, tmp_path: Path) -> None:
    dataset = word_statements(40)
    trained = train_probe(model, dataset, "blocks.*.hook_resid_post", control_words(), CONFIG)
    assert trained.meta["test"]["auroc"] == 1.0  # the last word decides the label
    split = split_by_group(dataset)
    expected = score_dataset(trained, model, dataset)
    assert trained.meta["test"]["accuracy"] == float(((expected[split.test] >= 0.5).long()
                                                       == torch.tensor(dataset.labels)[split.test]).double().mean())  # fmt: skip
    control = score_dataset(trained, model, as_dataset(control_words()))
    assert int((1 - control > trained.threshold).sum()) == 0  # 1 % of 40 control items: none above
    folder = save_probe(trained, tmp_path / "probe")
    record = json.loads((folder / "probe.json").read_text())
    assert record["site"] == trained.site and record["threshold_fpr"] == 0.01 and record["width"] == 32
    assert record["data"] == {
        "name": "words",
        "source": "builtin",
        "items": 80,
        "true": 40,
        "false": 40,
        "groups": 40,
    }
    loaded = load_probe(folder)
    assert torch.equal(score_dataset(loaded, model, dataset), expected)
    check_probe_fits(loaded, model)
    with pytest.raises(ProbeMismatchError, match="fingerprint"):
        check_probe_fits(loaded, tiny_model_with_seed(1))
    record["site"] = "blocks.1.mlp.hook_post"  # 64 wide, not 32
    (folder / "probe.json").write_text(json.dumps(record))
    with pytest.raises(
        ProbeMismatchError, match=r"32-wide activations at blocks\.1\.mlp\.hook_post; that site"
    ):
        check_probe_fits(load_probe(folder), model)
    record["threshold"] = 1.5
    (folder / "probe.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match=r"threshold 1.5 is outside \[0, 1\]"):
        load_probe(folder)


def as_dataset(texts: list[str]) -> ProbeDataset:
    return ProbeDataset("control", tuple(texts), tuple([0] * len(texts)), tuple(texts))


def tiny_model_with_seed(seed: int) -> HookedModel:
    from features.feature_helpers import word_tokenizer
    from tiny_models import build

    return HookedModel(build("llama", seed=seed), word_tokenizer(), name="tiny-llama")


def test_generalisation_matrix(model: HookedModel, tmp_path: Path) -> None:
    same = word_statements(30, seed=0, name="a")
    flipped = word_statements(30, seed=1, name="b", true_word="w20", false_word="w10")
    config = ProbeConfig(kind="diffmean", progress=False)
    matrix = generalisation_matrix(model, [same, flipped], SITE, config)
    assert matrix.auroc[0][0] == matrix.auroc[1][1] == 1.0
    assert matrix.auroc[0][1] == matrix.auroc[1][0] == 0.0  # the label word is swapped: perfectly inverted
    gathered = gather(model, list(same.texts), [SITE])
    split = split_by_group(same)
    probe = fit_on("diffmean", gathered, SITE, same, split.train, config)
    probs = statement_probabilities(probe, gathered.acts[SITE], gathered.item, len(same))
    assert label_auroc(probs[split.test], torch.tensor(same.labels)[split.test]) == matrix.auroc[0][0]
    assert "| a | 1.000 | 0.000 |" in matrix.markdown()
    path = matrix.figure(tmp_path / "matrix.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_ksparse_reads_the_sae_latents(model: HookedModel, tmp_path: Path) -> None:
    sae = tiny_sae()
    dataset = word_statements(30)
    config = ProbeConfig(kind="ksparse", k=4, progress=False, control=40)
    trained = train_probe(model, dataset, "", control_words(), config, sae=sae)
    assert trained.site == SITE and trained.probe.latents is not None and len(trained.probe.latents) == 4
    gathered = gather(model, list(dataset.texts), [SITE])
    with torch.no_grad():
        codes = sae.encode(gathered.acts[SITE])  # [n, d_sae]
    expected = trained.probe.probabilities(codes)  # the probe indexes its own latents
    loaded = load_probe(save_probe(trained, tmp_path / "sparse"))
    assert torch.allclose(score_dataset(loaded, model, dataset, sae=sae), expected, atol=1e-6)
