"""The IOI toy trained, with its ground truth: what every head attends to, what it writes to the
answer logits directly, and what mean-ablating it costs — then the roles those numbers name.

The attention scores and the ablation are the library's (`rama.circuits.head_scores`,
`rama.interventions.ablation`), so the ground truth checks the same code users run.
"""

from __future__ import annotations

from typing import Any

import torch

from rama.circuits.head_scores import attention_between, previous_token_score
from rama.hooks.model import HookedModel
from rama.interventions.ablation import mean_ablation
from rama.models.sites import block_site
from rama.toys.ioi import IOIPrompt, IOITask, accuracy, logit_difference
from rama.toys.toy_transformer import (
    Batch,
    ToyTransformerConfig,
    TrainSchedule,
    build_model,
    config_record,
    train_toy_transformer,
    word_tokenizer,
)

ROLE_RULES = {
    "name_mover": "at END attends most to IO (≥ 0.3) and its direct effect is ≥ 10% of the logit difference",
    "s_inhibition": "at END attends most to S2 (≥ 0.3) and mean-ablating it costs ≥ 10% of the logit difference",
    "duplicate_token": "attention S2→S1 ≥ 0.3",
    "induction": "attention S2→S1+1 ≥ 0.3",
    "previous_token": "mean attention from each token to the one before ≥ 0.5",
}


def ioi_ground_truth(model: Any, tokenizer: Any, task: IOITask, prompts: list[IOIPrompt]) -> dict[str, Any]:
    hooked = HookedModel(model, tokenizer)
    tokens, _ = task.encode(prompts, tokenizer)
    with torch.no_grad():
        logits, cache = hooked.run_with_cache(
            tokens, names=lambda s: s.endswith(("hook_pattern", "hook_result")) or s == _last_resid(hooked)
        )
    assert logits is not None
    clean = logit_difference(logits, prompts, tokenizer)
    attention = head_attention(cache.stack("attn.hook_pattern"), prompts, tokens)
    direct = direct_effects(hooked, cache, prompts, tokenizer)
    ablation = mean_ablation_effects(hooked, tokens, prompts, tokenizer, clean)
    numbers = {"logit_difference": float(clean.mean()), "attention": attention, "direct_effect": direct}
    numbers["mean_ablation_effect"] = ablation
    numbers["heads"] = classify(attention, direct, ablation, float(clean.mean()))
    numbers["role_rules"] = ROLE_RULES
    return numbers


def head_attention(
    patterns: torch.Tensor, prompts: list[IOIPrompt], tokens: torch.Tensor
) -> dict[str, list[list[float]]]:
    """Mean attention `[layer][head]` between the named positions; `patterns [layer, batch, head, q, k]`,
    `tokens [batch, pos]` (right-padded with id 0: padding is no query)."""

    def at(query: str, key: str, shift: int = 0) -> list[list[float]]:
        q = torch.tensor([p.positions[query] for p in prompts])
        k = torch.tensor([p.positions[key] + shift for p in prompts])
        return attention_between(patterns, q, k).tolist()

    return {
        "END->IO": at("END", "IO"),
        "END->S1": at("END", "S1"),
        "END->S2": at("END", "S2"),
        "S2->S1": at("S2", "S1"),
        "S2->S1+1": at("S2", "S1", 1),
        "previous_token": previous_token_score(patterns, queries=tokens != 0, start=2).tolist(),
    }


def _last_resid(hooked: HookedModel) -> str:
    return block_site(hooked.cfg.n_layers - 1, "hook_resid_post")


def direct_effects(
    hooked: HookedModel, cache: Any, prompts: list[IOIPrompt], tokenizer: Any
) -> list[list[float]]:
    """Each head's write at END through the final LayerNorm (its scale frozen at the clean run) onto
    W_U[IO] − W_U[S]: `[layer][head]`, mean over prompts."""
    end = torch.tensor([p.positions["END"] for p in prompts])
    rows = torch.arange(len(prompts))
    final = hooked.hf.transformer.ln_f
    with torch.no_grad():
        x = cache[_last_resid(hooked)][rows, end]  # [n, d_model], the final LayerNorm's input
        scale = (x.var(-1, unbiased=False, keepdim=True) + final.eps).sqrt()
        io = torch.tensor(tokenizer.convert_tokens_to_ids([p.io for p in prompts]))
        s = torch.tensor(tokenizer.convert_tokens_to_ids([p.s for p in prompts]))
        direction = (hooked.W_U[:, io] - hooked.W_U[:, s]).T * final.weight  # [n, d_model]
        results = cache.stack("attn.hook_result")[:, rows, end]  # [layer, n, head, d_model]
        centred = results - results.mean(-1, keepdim=True)
        effect = (centred / scale[None, :, None] * direction[None, :, None]).sum(-1)
    return effect.mean(1).tolist()


def mean_ablation_effects(
    hooked: HookedModel, tokens: torch.Tensor, prompts: list[IOIPrompt], tokenizer: Any, clean: torch.Tensor
) -> list[list[float]]:
    """How much the mean logit difference drops when a head's `hook_z` is replaced by its mean over
    prompts of the same template (positions line up within a template): `[layer][head]`."""
    templates = torch.tensor([p.template for p in prompts])
    effects = torch.zeros(hooked.cfg.n_layers, hooked.cfg.n_heads)
    for layer in range(hooked.cfg.n_layers):
        for head in range(hooked.cfg.n_heads):
            hook = mean_ablation(hooked, block_site(layer, "attn.hook_z"), tokens, [head], groups=templates)
            with torch.no_grad():
                logits = hooked.run_with_hooks(tokens, [hook])
            effects[layer, head] = clean.mean() - logit_difference(logits, prompts, tokenizer).mean()
    return effects.tolist()


def classify(
    attention: dict[str, list[list[float]]],
    direct: list[list[float]],
    ablation: list[list[float]],
    logit_diff: float,
) -> dict[str, list[list[int]]]:
    """Roles by `ROLE_RULES`: `{role: [[layer, head], …]}`."""
    roles: dict[str, list[list[int]]] = {role: [] for role in ROLE_RULES}
    for layer, row in enumerate(direct):
        for head in range(len(row)):

            def a(key: str, layer: int = layer, head: int = head) -> float:
                return attention[key][layer][head]

            target = max(("END->IO", "END->S1", "END->S2"), key=a)
            if target == "END->IO" and a(target) >= 0.3 and direct[layer][head] >= 0.1 * logit_diff:
                roles["name_mover"].append([layer, head])
            if target == "END->S2" and a(target) >= 0.3 and ablation[layer][head] >= 0.1 * logit_diff:
                roles["s_inhibition"].append([layer, head])
            if a("S2->S1") >= 0.3:
                roles["duplicate_token"].append([layer, head])
            if a("S2->S1+1") >= 0.3:
                roles["induction"].append([layer, head])
            if a("previous_token") >= 0.5:
                roles["previous_token"].append([layer, head])
    return roles


def train_ioi(
    task: IOITask | None = None,
    schedule: TrainSchedule | None = None,
    config: ToyTransformerConfig | None = None,
) -> tuple[Any, Any, list[dict[str, float]], dict[str, Any]]:
    """(model, tokenizer, loss curve with test accuracy, ground truth)."""
    task = task or IOITask()
    schedule = schedule or TrainSchedule(steps=1500, batch_size=64, lr=2e-3, log_every=50)
    config = config or ToyTransformerConfig(n_layers=3, n_heads=4, d_model=64, n_ctx=24, attention_only=False)
    tokenizer = word_tokenizer(task.words)
    model = build_model(config, len(tokenizer), schedule.seed)

    def make_batch(size: int, generator: torch.Generator) -> Batch:
        return task.encode(task.prompts(size, "train", generator), tokenizer)

    test = task.prompts(1024, "test", torch.Generator().manual_seed(20_000 + schedule.seed))

    def evaluate(model: Any) -> dict[str, float]:
        return {"test_accuracy": accuracy(model, tokenizer, test[:256], task)}

    curve = train_toy_transformer(model, make_batch, schedule, "ioi", evaluate=evaluate)
    truth = ioi_ground_truth(model, tokenizer, task, test)
    truth.update(task="ioi", **config_record(config, schedule), data={"test_fraction": task.test_fraction})
    truth["test_accuracy"] = accuracy(model, tokenizer, test, task)
    truth["test_pairs"] = [list(pair) for pair in task.name_pairs("test")]
    return model, tokenizer, curve, truth
