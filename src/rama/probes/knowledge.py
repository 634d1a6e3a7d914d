"""What the model itself knows: a probe can only find what the model represents, so each city fact is
also put to the model directly and scored by which country it prefers, and every contrast pair of a
statement set is scored by which of its two statements the model finds likelier."""

from __future__ import annotations

import torch
from tqdm import tqdm

from rama.errors import InputError
from rama.hooks.model import HookedModel
from rama.probes.datasets import ProbeDataset, city_facts

CITY_PROMPT = "Q: In which country is the city of {city}?\nA: The city of {city} is in"


def continuation_logprob(model: HookedModel, prompt: str, continuations: list[str]) -> torch.Tensor:
    """`[len(continuations)]` summed log-probabilities of each continuation's tokens after `prompt`."""
    prompt_len = len(model.to_tokens(prompt)[0])
    scored = token_logprobs(model, [prompt + c for c in continuations], batch_size=len(continuations))
    return torch.stack([logprobs[prompt_len - 1 :].sum() for _, logprobs in scored])


def city_fact_accuracy(
    model: HookedModel, limit: int | None = None, seed: int = 0, progress: bool = False
) -> float:
    """Share of cities whose true country the model finds likelier than the false one of the paired
    statement (same seed as the `cities` dataset), asked as a question and answered as a continuation."""
    facts = city_facts(seed)[:limit]
    right = 0
    for city, country, wrong in tqdm(facts, desc="asking the model", unit="city", disable=not progress):
        scores = continuation_logprob(model, CITY_PROMPT.format(city=city), [f" {country}.", f" {wrong}."])
        right += int(scores[0] > scores[1])
    return right / len(facts)


def token_logprobs(
    model: HookedModel, texts: list[str], batch_size: int = 16
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per text, (`[tokens]` its token ids, `[tokens - 1]` the log-probability of each token after the
    first); batches are right-padded, as rama's tokenizers give them."""
    scored: list[tuple[torch.Tensor, torch.Tensor]] = []
    for start in range(0, len(texts), batch_size):
        batch = model.tokenize(texts[start : start + batch_size])
        with torch.no_grad():
            logprobs = model(batch.tokens, attention_mask=batch.attention_mask).float().log_softmax(-1).cpu()
        mask = batch.attention_mask if batch.attention_mask is not None else torch.ones_like(batch.tokens)
        for row in range(len(batch.tokens)):
            ids = batch.tokens[row, : int(mask[row].sum())].cpu()
            scored.append((ids, logprobs[row, : len(ids) - 1].gather(1, ids[1:, None])[:, 0].double()))
    return scored


def pair_preference(model: HookedModel, dataset: ProbeDataset, batch_size: int = 16) -> float:
    """Share of contrast pairs (a group's true and false statement) whose true statement the model finds
    likelier: the summed log-probability of each statement's tokens from the first token where the two
    differ to its end (the shared beginning cancels; the first token has no prediction and is never scored)."""
    true_ids, false_ids = dataset.pairs()
    if not true_ids:
        raise InputError(f"{dataset.name} holds no group with one true and one false statement")
    scored = token_logprobs(model, list(dataset.texts), batch_size)
    right = 0
    for t, f in zip(true_ids, false_ids, strict=True):
        (a_ids, a_lp), (b_ids, b_lp) = scored[t], scored[f]
        shared = 1  # log-probabilities start at the second token
        while shared < min(len(a_ids), len(b_ids)) and a_ids[shared] == b_ids[shared]:
            shared += 1
        right += int(a_lp[shared - 1 :].sum() > b_lp[shared - 1 :].sum())
    return right / len(true_ids)
