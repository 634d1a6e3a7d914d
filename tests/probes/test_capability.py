"""Capability ablation on a tiny word-level Llama and a tiny TopK SAE: the scoring and specificity arithmetic
by hand, ablation of zero latents changes nothing, ablation touches only the chosen latents' share of the
reconstruction, and bad requests are clear errors."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from features.feature_helpers import SITE, tiny_model, tiny_sae
from rama.errors import ConfigError, InputError, RamaError
from rama.hooks.model import HookedModel
from rama.probes.capability import (
    CAPABILITIES,
    Capability,
    CapabilityConfig,
    Encoded,
    ablation_hooks,
    answer_logprobs,
    build_capabilities,
    capability_ablation,
    choose_latents,
    encode,
    latent_attribution,
    measure,
    specificity,
)
from rama.sae import SAE, SAEConfig, TopKConfig


@pytest.fixture(scope="module")
def model() -> HookedModel:
    return tiny_model()


@pytest.fixture(scope="module")
def sae() -> SAE:
    return tiny_sae().eval()


def word_capability(name: str, first: int, count: int = 12) -> Capability:
    """ "w{a} w{a+1} w{a+2}" → " w{a+3}" with a from `first` (words w3 … w96)."""
    starts = [first + i for i in range(count)]
    return Capability(
        name, tuple(f"w{a} w{a + 1} w{a + 2}" for a in starts), tuple(f" w{a + 3}" for a in starts)
    )


def test_answer_scores_by_hand() -> None:
    logits = torch.zeros(2, 4, 5)  # [n, pos, vocab]
    logits[0, 1, 3] = 2.0  # row 0: answer token 3 at position 2, predicted from position 1
    logits[1, 1, 1], logits[1, 2, 4] = 1.0, 3.0  # row 1: answer tokens 2, 4 at positions 2, 3
    encoded = Encoded(torch.tensor([[1, 0, 3, 0], [1, 0, 2, 4]]), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]),
                      [2, 2], [3, 4])  # fmt: skip
    right, logprob = answer_logprobs(logits, encoded)
    assert right.tolist() == [True, False]  # row 1's first answer token 2 is not the top prediction (1 is)
    expected0 = 2.0 - math.log(math.exp(2.0) + 4)
    expected1 = (0.0 - math.log(math.e + 4)) + (3.0 - math.log(math.exp(3.0) + 4))
    assert logprob.tolist() == pytest.approx([expected0, expected1], abs=1e-5)


def test_specificity_and_choice_by_hand() -> None:
    assert specificity(0.5, [0.1, 0.3]) == pytest.approx(2.5)  # 0.5 / mean(0.1, 0.3)
    assert specificity(0.2, [-0.1, 0.3]) == pytest.approx(2.0)
    assert specificity(0.3, [0.0, 0.0]) == math.inf and math.isnan(specificity(0.0, [0.0]))
    assert specificity(0.5, [1 / 30, -1 / 30]) == math.inf  # one prompt lost, one gained: no mean drop
    attributions = {"a": torch.tensor([1.0, 3.0, 2.0, 0.0]), "b": torch.tensor([0.0, 4.0, 0.0, 0.0]),
                    "c": torch.tensor([0.0, 2.0, 0.0, -2.0])}  # fmt: skip
    # contrast: a − mean(b, c) = [1, 0, 2, 1]: 2, then the tie 0 / 3 to the lower id
    assert choose_latents(attributions, "a", 3, "contrast") == [2, 0, 3]
    assert choose_latents(attributions, "a", 2, "attribution") == [1, 2]


def test_measure_matches_a_plain_forward(model: HookedModel) -> None:
    capability = word_capability("up", 10, count=5)
    accuracy, logprob = measure(model, capability, batch_size=2)
    rights, totals = [], []
    for prompt, answer in zip(capability.prompts, capability.answers, strict=True):
        tokens = model.to_tokens(prompt + answer, prepend_bos=True)  # [1, 5]: BOS, three words, the answer
        with torch.no_grad():
            logprobs = model(tokens)[0, -2].float().log_softmax(-1)
        rights.append(int(logprobs.argmax()) == int(tokens[0, -1]))
        totals.append(float(logprobs[tokens[0, -1]]))
    assert accuracy == sum(rights) / 5 and logprob == pytest.approx(sum(totals) / 5, abs=1e-5)


def test_ablating_no_latent_changes_nothing(model: HookedModel, sae: SAE) -> None:
    encoded = encode(model, ["w5 w6 w7", "w30 w31"], [" w8", " w32"])
    plain = model(encoded.tokens, attention_mask=encoded.mask)
    ablated = model.run_with_hooks(
        encoded.tokens, ablation_hooks(model, sae, []), attention_mask=encoded.mask
    )
    assert torch.equal(plain, ablated)


def test_ablation_removes_only_the_chosen_latents(model: HookedModel, sae: SAE) -> None:
    tokens = model.to_tokens(["w5 w6 w7 w8 w9"], prepend_bos=True)
    _, cache = model.run_with_cache(tokens, names=SITE)
    x = cache[SITE]  # [1, pos, d_model]
    codes = sae.encode(x)
    chosen = [int(i) for i in codes[0, 1:].sum(0).topk(3).indices]  # three latents that fire
    _, ablated = model.run_with_cache(tokens, names=SITE, fwd_hooks=ablation_hooks(model, sae, chosen))
    edited = codes.clone()
    edited[..., chosen] = 0
    expected = x + sae.decode(edited) - sae.decode(codes)  # the reconstruction without them, error kept
    torch.testing.assert_close(ablated[SITE][0, 1:], expected[0, 1:], atol=1e-5, rtol=1e-5)
    by_rows = x - torch.einsum("bpk,kd->bpd", codes[..., chosen], sae.W_dec[chosen])
    torch.testing.assert_close(ablated[SITE][0, 1:], by_rows[0, 1:], atol=1e-5, rtol=1e-5)
    assert torch.equal(ablated[SITE][0, 0], x[0, 0])  # the BOS is left alone
    again = sae.encode(ablated[SITE])  # the other latents still see their own input
    assert bool((again[0, 1:, chosen] < codes[0, 1:, chosen] + 1e-4).all())


def leaf_hook(store: list[torch.Tensor]) -> Callable[[torch.Tensor, object], torch.Tensor]:
    """Replace the site's activation by a leaf tensor (kept in `store`) whose gradient we can read."""

    def grab(activation: torch.Tensor, point: object) -> torch.Tensor:
        store.append(activation.detach().requires_grad_(True))
        return store[0]

    return grab


def test_attribution_is_activation_times_gradient(model: HookedModel, sae: SAE) -> None:
    capability = word_capability("up", 10, count=3)
    attribution = latent_attribution(model, sae, capability, batch_size=2)
    assert attribution.shape == (sae.cfg.d_sae,)
    silent = torch.ones(sae.cfg.d_sae, dtype=torch.bool)
    for prompt, answer in zip(capability.prompts, capability.answers, strict=True):
        _, cache = model.run_with_cache(model.to_tokens(prompt + answer, prepend_bos=True), names=SITE)
        silent &= ~(sae.encode(cache[SITE])[0, 1:] > 0).any(0)
    assert bool(silent.any()) and bool((attribution[silent] == 0).all())  # no activation, no attribution
    # independently: d log p / d code_i = W_dec[i] · d log p / dx, from the gradient at the site itself
    expected = torch.zeros(sae.cfg.d_sae)
    for prompt, answer in zip(capability.prompts, capability.answers, strict=True):
        tokens = model.to_tokens(prompt + answer, prepend_bos=True)
        leaf: list[torch.Tensor] = []
        with torch.enable_grad():
            logprobs = model.run_with_hooks(tokens, [(SITE, leaf_hook(leaf))])[0, -2].float().log_softmax(-1)
            [grad_x] = torch.autograd.grad(logprobs[tokens[0, -1]], leaf)
        codes = sae.encode(leaf[0].detach())[0, 1:]  # [pos, d_sae], BOS left out
        expected += (codes * (grad_x[0, 1:] @ sae.W_dec.T)).sum(0).detach() / len(capability.prompts)
    torch.testing.assert_close(attribution, expected, atol=1e-5, rtol=1e-4)


def test_ablation_table_end_to_end(model: HookedModel, sae: SAE) -> None:
    capabilities = [word_capability("up", 10), word_capability("high", 50), word_capability("mid", 30)]
    config = CapabilityConfig(latents=3, random_trials=2, progress=False)
    result = capability_ablation(model, sae, "up", config, capabilities)
    assert len(result.latents) == 3 and [r["name"] for r in result.rows] == ["up", "high", "mid"]
    assert all(r["prompts"] == 6 for r in result.rows)  # the odd-numbered half measures
    up = result.rows[0]
    drops = [r["logprob"] - r["logprob_ablated"] for r in result.rows]
    assert result.specificity_logprob == pytest.approx(specificity(drops[0], drops[1:]))
    assert up["accuracy"] == measure(model, capabilities[0].half(1))[0]
    assert "| **up** (target) | 6 |" in result.markdown()
    nothing = capability_ablation(model, sae, "up", CapabilityConfig(latents=0, random_trials=0, progress=False),
                                  capabilities)  # fmt: skip
    assert all(r["logprob_ablated"] == r["logprob"] for r in nothing.rows) and math.isnan(nothing.specificity)


def test_bad_requests_are_clear(model: HookedModel, sae: SAE) -> None:
    with pytest.raises(InputError, match="unknown capability 'poetry'; the built-in ones are countries"):
        build_capabilities(["letters", "poetry"], 10)
    capabilities = [word_capability("up", 10), word_capability("high", 50)]
    with pytest.raises(InputError, match="unknown target capability 'down'"):
        capability_ablation(model, sae, "down", CapabilityConfig(progress=False), capabilities)
    with pytest.raises(ConfigError, match="ablate 25 latents, but this SAE has only 24"):
        capability_ablation(model, sae, "up", CapabilityConfig(latents=25, progress=False), capabilities)
    narrow = SAE.create(
        SAEConfig(d_in=16, d_sae=8, architecture="topk", arch=TopKConfig(k=2), hook_name=SITE)
    )
    with pytest.raises(RamaError, match="d_in=16"):
        capability_ablation(model, narrow, "up", CapabilityConfig(latents=2, progress=False), capabilities)
    with pytest.raises(ConfigError, match="rule 'best'"):
        CapabilityConfig(rule="best")
    assert list(CAPABILITIES) == ["countries", "letters", "brackets"]


@pytest.mark.slow
def test_builtin_capabilities_tokenise_cleanly_on_smollm(smollm: HookedModel) -> None:
    """Every built-in prompt's tokens are a prefix of prompt + answer (no answer merges into the prompt)."""
    for capability in build_capabilities(list(CAPABILITIES), 60):
        encoded = encode(smollm, capability.prompts, capability.answers)
        assert len(capability.prompts) == 60 and all(
            stop > start for start, stop in zip(encoded.starts, encoded.stops, strict=True)
        )
    assert smollm.to_str_tokens("))") == ["))"]
