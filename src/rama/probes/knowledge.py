"""What the model itself knows: a probe can only find what the model represents, so each city fact is
also put to the model directly and scored by which country it prefers."""

from __future__ import annotations

import torch
from tqdm import tqdm

from rama.hooks.model import HookedModel
from rama.probes.datasets import city_facts

CITY_PROMPT = "Q: In which country is the city of {city}?\nA: The city of {city} is in"


def continuation_logprob(model: HookedModel, prompt: str, continuations: list[str]) -> torch.Tensor:
    """`[len(continuations)]` summed log-probabilities of each continuation's tokens after `prompt`."""
    prompt_len = len(model.to_tokens(prompt)[0])
    texts = [prompt + c for c in continuations]
    batch = model.tokenize(texts)
    with torch.no_grad():
        logprobs = model(batch.tokens, attention_mask=batch.attention_mask).float().log_softmax(-1).cpu()
    mask = batch.attention_mask if batch.attention_mask is not None else torch.ones_like(batch.tokens)
    totals = []
    for row in range(len(texts)):
        stop = int(mask[row].sum())
        targets = batch.tokens[row, prompt_len:stop]
        totals.append(logprobs[row, prompt_len - 1 : stop - 1].gather(1, targets[:, None]).sum())
    return torch.stack(totals)


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
