"""Bad inputs are InputErrors that say what would be right, raised before any forward pass."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rama.errors import ConfigError, InputError, RamaError
from rama.hooks import HookedModel, HookPoint
from tiny_models import VOCAB, build, random_tokens

WORDS = ["<pad>", "<s>", "</s>", *[f"w{i}" for i in range(3, VOCAB)]]


def word_tokenizer(bos: bool) -> Any:
    """A word-level tokenizer over the tiny models' 97 ids: `"w5 w7"` -> `[5, 7]`; BOS is id 1."""
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    specials = {"pad_token": "<pad>", "eos_token": "</s>", **({"bos_token": "<s>"} if bos else {})}
    return PreTrainedTokenizerFast(tokenizer_object=core, **specials)


@pytest.fixture(scope="module")
def model() -> HookedModel:
    return HookedModel(build("llama"), word_tokenizer(bos=True))


def never_called(activation: torch.Tensor, hook: HookPoint) -> None:
    raise AssertionError("the forward pass ran before the input was checked")


BAD_INPUTS: list[tuple[Any, str]] = [
    ("", r"the prompt is empty \(no tokens\).*prepend_bos=True"),
    (["w3 w4", ""], r"prompt 1 is empty"),
    ([], r"empty list: give a string or a list of at least one string"),
    ([5, 6, 7], r"list of ints: token ids go in a tensor"),
    (torch.tensor([[3, VOCAB]]), rf"token ids must lie in 0\.\.{VOCAB - 1}.*from 3 to {VOCAB}"),
    (torch.tensor([[-1, 4]]), rf"token ids must lie in 0\.\.{VOCAB - 1}.*from -1 to 4"),
    (torch.tensor([[3.0, 4.0]]), r"integer tensor, not torch\.float32.*model\.to_tokens"),
    (
        torch.zeros(1, 2, 3, dtype=torch.long),
        r"\[batch, pos\] \(or \[pos\] for one sequence\); got shape \(1, 2, 3\)",
    ),
    (torch.zeros(1, 0, dtype=torch.long), r"token tensor is empty \(shape \(1, 0\)\)"),
    (3, r"not int"),
]


@pytest.mark.parametrize(("inputs", "message"), BAD_INPUTS)
def test_bad_input_is_a_clear_error_before_the_forward(model: HookedModel, inputs: Any, message: str) -> None:
    for call in (
        lambda: model.run_with_hooks(inputs, [("blocks.0.hook_resid_pre", never_called)]),
        lambda: model.run_with_cache(inputs, fwd_hooks=[("blocks.0.hook_resid_pre", never_called)]),
        lambda: model.generate(inputs, 2, fwd_hooks=[("blocks.0.hook_resid_pre", never_called)]),
    ):
        with pytest.raises(InputError, match=message) as caught:
            call()
        assert isinstance(caught.value, RamaError)


def test_a_mask_of_the_wrong_rank_is_refused(model: HookedModel) -> None:
    tokens = random_tokens(batch=2, pos=5)
    with pytest.raises(InputError, match=r"attention_mask has shape \(5,\); it must match .* \(2, 5\)"):
        model(tokens, attention_mask=torch.ones(5, dtype=torch.long))


def test_one_dimensional_tokens_are_one_sequence(model: HookedModel) -> None:
    tokens = random_tokens(batch=1, pos=6)
    with torch.no_grad():
        assert torch.equal(model(tokens[0]), model(tokens))


def test_prepend_bos_is_off_by_default_and_puts_bos_first(model: HookedModel) -> None:
    assert model.to_tokens("w5 w6")[0].tolist() == [5, 6]  # the tokenizer adds none: nor does rama
    assert model.to_tokens("w5 w6", prepend_bos=True)[0].tolist() == [1, 5, 6]
    assert model.to_tokens("<s> w5", prepend_bos=True)[0].tolist() == [1, 5]  # never twice
    assert model.to_tokens("", prepend_bos=True)[0].tolist() == [1]
    with torch.no_grad():
        plain = model.run_with_cache("w5 w6", "blocks.0.hook_resid_pre")[1]["blocks.0.hook_resid_pre"]
        cache = model.run_with_cache("w5 w6", "blocks.0.hook_resid_pre", prepend_bos=True)[1]
        with_bos = cache["blocks.0.hook_resid_pre"]
        assert torch.equal(with_bos[0, 0], model.W_E[1]) and torch.equal(with_bos[0, 1:], plain[0])
        assert model.run_with_hooks("w5 w6", prepend_bos=True).shape[1] == 3
        generated = model.generate("w5 w6", 2, prepend_bos=True)
    assert isinstance(generated, str) and generated.startswith("w5 w6")


def test_prepend_bos_without_a_bos_token_or_on_tensors_is_an_error() -> None:
    model = HookedModel(build("llama"), word_tokenizer(bos=False))
    assert model.to_tokens("w5")[0].tolist() == [5]
    with pytest.raises(InputError, match="tokenizer has no BOS token"):
        model.to_tokens("w5", prepend_bos=True)
    with pytest.raises(InputError, match="token tensor is used exactly as given"):
        model(random_tokens(), prepend_bos=True)


def test_generation_settings_are_checked_before_generating(model: HookedModel) -> None:
    hooks = [("blocks.0.hook_resid_pre", never_called)]
    with pytest.raises(ConfigError, match="max_new_tokens must be at least 1, not 0"):
        model.generate("w5", 0, fwd_hooks=hooks)
    with pytest.raises(ConfigError, match=r"temperature must be above 0 when sampling, not 0\.0"):
        model.generate("w5", 3, do_sample=True, temperature=0.0, fwd_hooks=hooks)
    n_ctx = model.cfg.n_ctx
    with pytest.raises(InputError, match=rf"context is {n_ctx} tokens; ask for at most {n_ctx - 1} new"):
        model.generate("w5", n_ctx, fwd_hooks=hooks)  # one prompt token + n_ctx would run past the end
