"""Concept search over SAE latents, on an SAE built by hand so the answer is known."""

from __future__ import annotations

import pytest
import torch

import rama
from rama.features import (
    concept_token_ids,
    find_latents,
    latents_by_effect,
    latents_by_effect_per_concept,
)
from rama.sae.base import SAE, SAEConfig
from rama.toys import pretrained
from rama.toys.ioi import IOITask


def test_the_latent_built_for_a_word_is_found_first() -> None:
    model = rama.load(pretrained("ioi"))
    mary = model.tokenizer.convert_tokens_to_ids("Mary")
    sae = SAE.create(SAEConfig(d_in=64, d_sae=3, architecture="standard", hook_name="hook_embed"))
    embedding = model.W_E[mary].detach()
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_dec.zero_()
        sae.W_enc[:, 0] = embedding / embedding.pow(2).sum()  # 1.0 on "Mary", little elsewhere
        sae.b_enc.copy_(torch.tensor([-0.9, 1.0, -5.0]))  # latent 1 fires everywhere, latent 2 never
    prompts = IOITask().prompts(64, "train", torch.Generator().manual_seed(0))
    tokens = IOITask().encode(prompts, model.tokenizer)[0]
    found = find_latents(sae, model, [tokens[:32], tokens[32:]], ["mary"], top=2, min_fires=1)
    assert found[0].latent == 0 and found[0].share == pytest.approx(1.0)
    later = tokens[:, 2:]  # the first two positions of each context are skipped by default
    assert found[0].fires == int((later == mary).sum()) < int((tokens == mary).sum())
    assert found[0].max_activation == pytest.approx(0.1, abs=1e-4)
    real = later[(later != 0) & (later != 1)]  # pad and BOS are excluded from the search
    assert found[1].latent == 1
    assert found[1].share == pytest.approx(float((real == mary).float().mean()), abs=1e-4)


def test_concept_tokens_match_whole_words_or_starred_prefixes() -> None:
    model = rama.load(pretrained("ioi"))
    ids = concept_token_ids(model, ["mar*", "sta*"])
    words = sorted(model.tokenizer.convert_ids_to_tokens(ids.tolist()))
    assert words == ["Mark", "Mary", "market", "station"]  # case-insensitive prefixes; "store" is not "sta"
    exact = concept_token_ids(model, ["mar", "mary", "station"])
    assert sorted(model.tokenizer.convert_ids_to_tokens(exact.tolist())) == ["Mary", "station"]
    with pytest.raises(ValueError, match="at least one concept word"):
        concept_token_ids(model, [" ", "*"])


def test_latents_are_ranked_by_how_much_they_make_the_model_say_the_concept() -> None:
    model = rama.load(pretrained("ioi"))
    site = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    mary = model.tokenizer.convert_tokens_to_ids("Mary")
    towards_mary = model.W_U[:, mary].detach()
    sae = SAE.create(SAEConfig(d_in=64, d_sae=4, architecture="standard", hook_name=site))
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(4, 64, generator=torch.Generator().manual_seed(0)))
        sae.W_dec[1] = towards_mary
        sae.W_dec[2] = -towards_mary
    prompts = ["Then, John and Mary went to the store.", "When Paul and Anna had a drink"]
    ranked = latents_by_effect(sae, model, prompts, ["mary"], norm=20.0, top=4)
    assert ranked[0].latent == 1 and ranked[-1].latent == 2
    assert ranked[0].gain > 1.0 > 0.0 > ranked[-1].gain  # nats of log P(next token is "Mary")
    only = latents_by_effect(sae, model, prompts, ["mary"], candidates=[3, 2], norm=20.0, top=5)
    assert [r.latent for r in only] == [3, 2]
    assert only[1].gain == pytest.approx(ranked[-1].gain, abs=1e-4)  # batching does not change a score
    with pytest.raises(IndexError, match=r"latents \[4\] are outside this SAE's 4 latents \(0 … 3\)"):
        latents_by_effect(sae, model, prompts, ["mary"], candidates=[4])
    with pytest.raises(ValueError, match="at least one candidate"):
        latents_by_effect(sae, model, prompts, ["mary"], candidates=[])


def test_several_concepts_are_ranked_from_one_set_of_passes_as_each_would_be_alone() -> None:
    model = rama.load(pretrained("ioi"))
    site = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    mary, john = model.tokenizer.convert_tokens_to_ids(["Mary", "John"])
    sae = SAE.create(SAEConfig(d_in=64, d_sae=5, architecture="standard", hook_name=site))
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(5, 64, generator=torch.Generator().manual_seed(1)))
        sae.W_dec[1] = model.W_U[:, mary]
        sae.W_dec[3] = model.W_U[:, john]
    prompts = ["Then, John and Mary went to the store.", "When Paul and Anna had a drink"]
    concepts = {"mary": ["mary"], "john": ["john"]}
    together = latents_by_effect_per_concept(sae, model, prompts, concepts, norm=20.0, top=5, chunk=2)
    assert together["mary"][0].latent == 1 and together["john"][0].latent == 3
    for name, words in concepts.items():
        alone = latents_by_effect(sae, model, prompts, words, norm=20.0, top=5)
        assert [r.latent for r in together[name]] == [r.latent for r in alone]
        assert [r.gain for r in together[name]] == pytest.approx([r.gain for r in alone], abs=1e-4)
        assert [r.entropy for r in together[name]] == pytest.approx([r.entropy for r in alone], abs=1e-4)
    with pytest.raises(ValueError, match="at least one concept"):
        latents_by_effect_per_concept(sae, model, prompts, {})
