"""Logit lens and tuned lens on tiny real HF models: exact at the last layer, an identity tuned lens
is the logit lens, training lowers held-out KL, save/load, resume, and the curves by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path
from unittest import mock

import pytest
import torch
import transformers as tf

from features.feature_helpers import word_tokenizer
from rama.circuits import lenses
from rama.circuits.lenses import (
    LensMismatchError,
    TunedLens,
    TunedLensTraining,
    lens_curves,
    lens_figure,
    lens_sites,
    load_tuned_lens,
    train_tuned_lens,
    unembed_residual,
)
from rama.errors import ConfigError, InputError
from rama.hooks.model import HookedModel
from tiny_models import CONFIGS, hooked, random_tokens


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 documents of 60 random words: its held-out split (every 50th document) is 8 of them."""
    generator = torch.Generator().manual_seed(0)
    path = tmp_path_factory.mktemp("lens") / "corpus.jsonl"
    rows = torch.randint(3, 97, (400, 60), generator=generator).tolist()
    path.write_text("".join(json.dumps({"text": " ".join(f"w{i}" for i in row)}) + "\n" for row in rows))
    return path


def peaked_llama(seed: int = 0) -> HookedModel:
    """The tiny Llama with large random weights: peaked predictions that change from layer 0 to 1
    (at the default init every layer predicts nearly uniformly, and there is nothing to tune)."""
    torch.manual_seed(seed)
    config = CONFIGS["llama"]()
    config.initializer_range = 0.5
    return HookedModel(tf.AutoModelForCausalLM.from_config(config).eval(), word_tokenizer(), name="peaked")


TRAINING = TunedLensTraining(tokens=4096, batch_size=4, context_size=32, lr=1e-2, progress=False)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
def test_the_logit_lens_at_the_last_layer_is_the_model(arch: str) -> None:
    hf, model = hooked(arch)
    tokens = random_tokens(2, 9)
    with torch.no_grad():
        expected = hf(tokens).logits
        _, cache = model.run_with_cache(tokens, lens_sites(model))
        last = unembed_residual(model, cache[lens_sites(model)[-1]])
    torch.testing.assert_close(last, expected, rtol=0, atol=1e-6)


def test_an_identity_tuned_lens_is_the_logit_lens() -> None:
    _, model = hooked("llama")
    with torch.no_grad():
        _, cache = model.run_with_cache(random_tokens(2, 9), lens_sites(model))
        identity = TunedLens.identity(model)
        for layer, site in enumerate(lens_sites(model)):
            logit_lens = unembed_residual(model, cache[site])
            assert torch.equal(identity.logits(model, layer, cache[site]), logit_lens)


def test_training_lowers_held_out_kl_and_the_lens_round_trips(corpus: Path, tmp_path: Path) -> None:
    model = peaked_llama()
    lens = train_tuned_lens(model, TRAINING, corpus)
    assert lens.meta["tokens"] == 4096 and lens.meta["fingerprint"]
    curves = lens_curves(model, lens, 512, corpus, 4, 32, progress=False)
    logit_kl, tuned_kl = curves.kl["logit"], curves.kl["tuned"]
    assert logit_kl[0] > 1.0 and tuned_kl[0] < 0.8 * logit_kl[0]  # measured: 1.74 -> 1.16 nats
    assert curves.perplexity["tuned"][0] < curves.perplexity["logit"][0]
    assert logit_kl[-1] == tuned_kl[-1] == 0.0  # the last translator stays the identity
    lens.save(tmp_path / "lens")
    loaded = load_tuned_lens(tmp_path / "lens", model)
    resid = torch.randn(5, model.cfg.d_model)
    with torch.no_grad():
        assert torch.equal(loaded.logits(model, 0, resid), lens.logits(model, 0, resid))
    assert loaded.sites == lens_sites(model) and loaded.meta["tokens"] == 4096
    with pytest.raises(LensMismatchError, match="fingerprint"):
        load_tuned_lens(tmp_path / "lens", peaked_llama(seed=3))
    with pytest.raises(InputError, match="not a tuned-lens folder"):
        load_tuned_lens(tmp_path, model)


def test_a_killed_run_resumes_to_the_same_lens(corpus: Path, tmp_path: Path) -> None:
    model = peaked_llama()
    config = TunedLensTraining(tokens=1024, batch_size=4, context_size=32, lr=1e-2, checkpoint_every=2,
                               progress=False, bf16=False)  # fmt: skip
    whole = train_tuned_lens(model, config, corpus)
    real_step, calls = lenses.training_step, []

    def dies_at_step_5(*args: object) -> float:
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_step(*args)  # type: ignore[arg-type]

    with mock.patch.object(lenses, "training_step", dies_at_step_5), pytest.raises(KeyboardInterrupt):
        train_tuned_lens(model, config, corpus, checkpoint_dir=tmp_path)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 4
    resumed = train_tuned_lens(model, config, corpus, checkpoint_dir=tmp_path)
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert resumed.meta["train_kl"] == pytest.approx(whole.meta["train_kl"], abs=1e-6)
    with pytest.raises(ConfigError, match="another run"):
        train_tuned_lens(model, TunedLensTraining(tokens=2048, batch_size=4, context_size=32, progress=False),
                         corpus, checkpoint_dir=tmp_path)  # fmt: skip


def test_curves_match_a_hand_computation(corpus: Path, tmp_path: Path) -> None:
    model = peaked_llama()
    curves = lens_curves(model, None, 128, corpus, 4, 32, progress=False)  # one batch of 4 × 32
    [tokens] = list(lenses.corpus_batches(model, corpus, "test", 128, 4, 32, seed=0))
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, lens_sites(model))
    assert logits is not None
    W_U, norm = model.W_U.detach(), model.hf.model.norm
    eps, w = norm.variance_epsilon, norm.weight.detach()
    resid = cache["blocks.0.hook_resid_post"]
    by_hand = (w * resid / torch.sqrt(resid.pow(2).mean(-1, keepdim=True) + eps)) @ W_U  # [4, 32, vocab]
    kl, nll, n = 0.0, 0.0, 0
    for row in range(4):
        for pos in range(31):  # the last position has no next token; BOS (id 1) is special
            if int(tokens[row, pos]) in (0, 1, 2):
                continue
            p = torch.softmax(logits[row, pos].double(), -1)
            q = torch.softmax(by_hand[row, pos].double(), -1)
            kl += float((p * (p / q).log()).sum())
            nll -= float(q[tokens[row, pos + 1]].log())
            n += 1
    assert curves.tokens == n > 100
    assert curves.kl["logit"][0] == pytest.approx(kl / n, rel=1e-4)
    assert curves.perplexity["logit"][0] == pytest.approx(math.exp(nll / n), rel=1e-4)
    assert curves.perplexity["logit"][-1] == pytest.approx(curves.model_perplexity, rel=1e-6)
    figure = lens_figure(curves, tmp_path / "curves.png")
    assert figure.stat().st_size > 10_000


def test_bad_settings_and_models_are_refused() -> None:
    with pytest.raises(ConfigError, match="tokens must be at least 1"):
        TunedLensTraining(tokens=0)
    with pytest.raises(ConfigError, match="lr must be above 0"):
        TunedLensTraining(lr=0.0)
    _, encoder = hooked("bert")
    with pytest.raises(InputError, match="no LM head"):
        unembed_residual(encoder, torch.zeros(1, encoder.cfg.d_model))
