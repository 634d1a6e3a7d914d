"""Capabilities as a property of the weights: find the SAE latents that carry one capability, ablate
them, and measure every capability before and after.

A capability is a set of prompts with an expected continuation, generated offline (`CAPABILITIES`). It is
scored teacher-forced: a prompt is right when every token of its answer is the model's top prediction
given the prompt and the answer's earlier tokens; the log-prob is the answer's summed log-probability.
Prompts start with BOS, as the contexts rama trains SAEs on do.

Each capability's prompts are split in two: the even-numbered ones choose the latents, the odd-numbered
ones measure (so the ablation is judged on prompts that did not choose it).

Latents (rule `contrast`, the default): the attribution of a capability to latent i is the mean over its
prompts of Σ_pos a_i(pos) · ∂ log p(answer) / ∂ a_i(pos) (activation × gradient, every position but the
BOS, the SAE's error term held fixed). The K latents with the largest target attribution minus the mean
attribution of the other capabilities are ablated. Rule `attribution` ranks by the target's alone.

Ablation: the chosen latents are zeroed in the SAE's reconstruction at every position but the BOS while the
SAE's error term is kept (`rama.interventions.ablate_features`), so ablating nothing changes nothing.
Control: K latents drawn at random (seeded) from those that fire on the target's measuring prompts,
averaged over a few draws. Specificity = the target's accuracy drop / the mean accuracy drop of the others.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from rama.errors import ConfigError, InputError
from rama.hooks.core import HookPoint
from rama.hooks.model import HookedModel
from rama.interventions.feature_edits import ablate_features, check_sae_site
from rama.interventions.steering import Hook
from rama.probes.datasets import city_facts
from rama.sae import SAE
from rama.sae.base import setting

RULES = ("contrast", "attribution")
LOWER = "abcdefghijklmnopqrstuvwxyz"
FUNCTIONS = ["print", "len", "sum", "max", "min", "sorted", "list", "str", "abs", "round", "int", "f", "g"]
ARGUMENTS = ["x", "y", "a", "b", "value", "name", "items", "total", "count", "data", "key", "n", "i"]


@dataclass(frozen=True)
class Capability:
    """Prompts and the continuation each should get."""

    name: str
    prompts: tuple[str, ...]
    answers: tuple[str, ...]

    def half(self, part: int) -> Capability:
        """Part 0 (even-numbered prompts: choose latents) or 1 (odd-numbered: measure)."""
        return Capability(self.name, self.prompts[part::2], self.answers[part::2])


def city_countries(count: int, seed: int) -> Capability:
    """ "The city of Tokyo is in the country of" → " Japan", the most populous cities first."""
    facts = city_facts(seed)[:count]
    return Capability("countries", tuple(f"The city of {city} is in the country of" for city, _, _ in facts),
                      tuple(f" {country}" for _, country, _ in facts))  # fmt: skip


def letter_sequences(count: int, seed: int) -> Capability:
    """ "f, g, h, i," → " j": three to five consecutive letters, lower or upper case, in a seeded order."""
    items = [(case, start, length) for case in (LOWER, LOWER.upper()) for length in (3, 4, 5)
             for start in range(26 - length)]  # fmt: skip
    random.Random(seed).shuffle(items)
    prompts = [", ".join(case[start : start + n]) + "," for case, start, n in items[:count]]
    return Capability(
        "letters", tuple(prompts), tuple(" " + case[start + n] for case, start, n in items[:count])
    )


def closing_brackets(count: int, seed: int) -> Capability:
    """ "print(len(x, y" → "))": two calls opened, their arguments given; the answer closes both."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        outer, inner = rng.sample(FUNCTIONS, 2)
        first, second = rng.sample(ARGUMENTS, 2)
        prompts.append(f"{outer}({inner}({first}, {second}")
    return Capability("brackets", tuple(prompts), ("))",) * count)


CAPABILITIES: dict[str, Callable[[int, int], Capability]] = {
    "countries": city_countries,
    "letters": letter_sequences,
    "brackets": closing_brackets,
}


@dataclass(frozen=True)
class CapabilityConfig:
    """How the latents are chosen and the ablation measured; `rama probe capability` takes these fields."""

    latents: int = setting(20, "SAE latents to ablate")
    rule: str = setting("contrast", f"how latents are ranked: {' | '.join(RULES)}")
    prompts: int = setting(60, "prompts per capability (half choose the latents, half measure)")
    random_trials: int = setting(3, "random-latent ablations of the same size (the control)")
    seed: int = setting(0, "seed of the prompts and the random latents")
    batch_size: int = setting(16, "prompts per forward pass")
    progress: bool = setting(True, "show progress bars")

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ConfigError(f"rule {self.rule!r} is not one of {', '.join(RULES)}")
        if self.latents < 0 or self.prompts < 4 or self.random_trials < 0 or self.batch_size < 1:
            raise ConfigError("latents ≥ 0, prompts ≥ 4, random_trials ≥ 0 and batch_size ≥ 1 please")


def build_capabilities(names: Sequence[str], count: int, seed: int = 0) -> list[Capability]:
    """The named built-in capabilities with `count` prompts each; an unknown name is an `InputError`."""
    unknown = [n for n in names if n not in CAPABILITIES]
    if unknown:
        raise InputError(
            f"unknown capability {unknown[0]!r}; the built-in ones are {', '.join(CAPABILITIES)}"
        )
    return [CAPABILITIES[name](count, seed) for name in names]


@dataclass(frozen=True)
class Encoded:
    """Teacher-forced prompts: `[n, pos]` tokens and mask (right-padded), and where each answer lies."""

    tokens: torch.Tensor
    mask: torch.Tensor
    starts: list[int]  # first answer token per row
    stops: list[int]  # one past the last answer token


def encode(model: HookedModel, prompts: Sequence[str], answers: Sequence[str]) -> Encoded:
    """prompt + answer with BOS, checking that the prompt's tokens are a prefix of the whole."""
    batch = model.tokenize([p + a for p, a in zip(prompts, answers, strict=True)], prepend_bos=True)
    mask = batch.attention_mask if batch.attention_mask is not None else torch.ones_like(batch.tokens)
    starts, stops = [], []
    for row, prompt in enumerate(prompts):
        head = model.to_tokens(prompt, prepend_bos=True)[0]
        if not torch.equal(batch.tokens[row, : len(head)], head) or int(mask[row].sum()) <= len(head):
            raise InputError(
                f"the answer to {prompt!r} merges with the prompt's last token; end the prompt earlier"
            )
        starts.append(len(head))
        stops.append(int(mask[row].sum()))
    return Encoded(batch.tokens, mask, starts, stops)


def answer_logprobs(logits: torch.Tensor, encoded: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
    """From `[n, pos, vocab]` logits: (`[n]` bool, every answer token top-1; `[n]` summed log-prob,
    differentiable when the logits are)."""
    logprobs = logits.float().log_softmax(-1)
    right, total = [], []
    for row, (start, stop) in enumerate(zip(encoded.starts, encoded.stops, strict=True)):
        target = encoded.tokens[row, start:stop].to(logprobs.device)
        predicted = logprobs[row, start - 1 : stop - 1]  # [answer, vocab]
        right.append(bool((predicted.argmax(-1) == target).all()))
        total.append(predicted.gather(1, target[:, None]).sum())
    return torch.tensor(right), torch.stack(total).cpu()


def measure(model: HookedModel, capability: Capability, hooks: Sequence[Hook] = (),
            batch_size: int = 16) -> tuple[float, float]:  # fmt: skip
    """(accuracy, mean log-prob of the answer) of the capability's prompts with `hooks` active."""
    right, logprob = [], []
    for at in range(0, len(capability.prompts), batch_size):
        encoded = encode(
            model, capability.prompts[at : at + batch_size], capability.answers[at : at + batch_size]
        )
        with torch.no_grad():
            logits = model.run_with_hooks(encoded.tokens, list(hooks), attention_mask=encoded.mask)
        ok, lp = answer_logprobs(logits, encoded)
        right.append(ok)
        logprob.append(lp)
    return float(torch.cat(right).double().mean()), float(torch.cat(logprob).mean())


def attribution_hook(sae: SAE, site: str, store: list[torch.Tensor]) -> Hook:
    """Pass the site through the SAE with its error term held fixed, keeping the codes as a leaf whose
    gradient is the latents' attribution: `x' = decode(codes) + (x − decode(codes))` with the error detached."""

    def hook(activation: torch.Tensor, point: HookPoint) -> torch.Tensor:
        x = activation.detach().to(sae.W_enc.dtype)
        codes = sae.encode(x).detach().requires_grad_(True)  # [batch, pos, d_sae]
        reconstruction = sae.decode(codes, x)
        store.append(codes)
        return (reconstruction + (x - reconstruction).detach()).to(activation.dtype)

    return site, hook


def latent_attribution(
    model: HookedModel, sae: SAE, capability: Capability, batch_size: int = 16
) -> torch.Tensor:
    """`[d_sae]` mean over the prompts of Σ_pos activation × gradient of the answer's log-prob (BOS and
    padding left out)."""
    site = check_sae_site(model, sae, None)
    total = torch.zeros(sae.cfg.d_sae)
    for at in range(0, len(capability.prompts), batch_size):
        encoded = encode(
            model, capability.prompts[at : at + batch_size], capability.answers[at : at + batch_size]
        )
        store: list[torch.Tensor] = []
        with torch.enable_grad():
            logits = model.run_with_hooks(encoded.tokens, [attribution_hook(sae, site, store)],
                                          attention_mask=encoded.mask)  # fmt: skip
            _, logprob = answer_logprobs(logits, encoded)
            [grad] = torch.autograd.grad(logprob.sum(), store)
        keep = encoded.mask.clone().to(grad.device)
        keep[:, 0] = 0  # the BOS
        total += (store[0].detach() * grad * keep[..., None]).sum((0, 1)).float().cpu()
    return total / len(capability.prompts)


def choose_latents(attributions: dict[str, torch.Tensor], target: str, count: int, rule: str) -> list[int]:
    """The `count` latents with the largest score: the target's attribution, minus (rule `contrast`) the mean
    attribution of the other capabilities. Ties go to the lower id."""
    score = attributions[target].clone()
    others = [a for name, a in attributions.items() if name != target]
    if rule == "contrast" and others:
        score -= torch.stack(others).mean(0)
    order = sorted(range(len(score)), key=lambda i: (-float(score[i]), i))
    return order[:count]


def specificity(target_drop: float, control_drops: Sequence[float]) -> float:
    """The target's drop over the mean drop of the controls (inf when the controls do not drop on average
    and the target does; NaN when neither drops; negative when the controls improve on average)."""
    control = sum(control_drops) / len(control_drops) if control_drops else 0.0
    if abs(control) < 1e-9:  # drops of +1 and −1 prompt cancel to ~1e-17, not to 0.0
        return math.nan if target_drop == 0.0 else math.copysign(math.inf, target_drop)
    return target_drop / control


def firing_latents(model: HookedModel, sae: SAE, capability: Capability) -> list[int]:
    """Latents active at some position but the BOS of some prompt of `capability`."""
    site = check_sae_site(model, sae, None)
    encoded = encode(model, capability.prompts, capability.answers)
    with torch.no_grad():
        _, cache = model.run_with_cache(encoded.tokens, names=site, attention_mask=encoded.mask)
        codes = sae.encode(cache[site].to(sae.W_enc.dtype))  # [n, pos, d_sae]
    keep = encoded.mask.bool().clone()
    keep[:, 0] = False
    return torch.nonzero((codes[keep] > 0).any(0)).flatten().tolist()


@dataclass
class CapabilityResult:
    target: str
    latents: list[int]
    rule: str
    site: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # per capability: before / ablated / random
    specificity: float = math.nan  # accuracy drop: target / mean of the others, chosen latents
    specificity_logprob: float = math.nan  # the same on the mean log-prob of the answer
    random_specificity: float = math.nan  # the same for the random latents (mean over draws)
    random_specificity_logprob: float = math.nan
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        lines = [
            "| capability | prompts | accuracy before | after (chosen) | after (random) "
            "| log-prob before | after (chosen) | after (random) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.rows:
            name = f"**{r['name']}** (target)" if r["name"] == self.target else r["name"]
            lines.append(f"| {name} | {r['prompts']} | {r['accuracy']:.3f} | {r['accuracy_ablated']:.3f} | "
                         f"{r['accuracy_random']:.3f} | {r['logprob']:.2f} | {r['logprob_ablated']:.2f} | "
                         f"{r['logprob_random']:.2f} |")  # fmt: skip
        lines.append(
            f"\nspecificity (target drop / mean control drop), accuracy: chosen {self.specificity:.2f}, random "
            f"{self.random_specificity:.2f}; log-prob: chosen {self.specificity_logprob:.2f}, random "
            f"{self.random_specificity_logprob:.2f}"
        )
        return "\n".join(lines) + "\n"


def check_request(sae: SAE, target: str, names: Sequence[str], config: CapabilityConfig) -> None:
    if target not in names:
        raise InputError(f"unknown target capability {target!r}; choose one of {', '.join(names)}")
    if config.latents > sae.cfg.d_sae:
        raise ConfigError(f"asked to ablate {config.latents} latents, but this SAE has only {sae.cfg.d_sae}")
    if len(names) < 2:
        raise InputError("the ablation needs the target and at least one other capability as a control")


def ablation_hooks(model: HookedModel, sae: SAE, latents: Sequence[int]) -> list[Hook]:
    """Zero `latents` at every position but the first (the BOS), the SAE's error term kept."""
    return [ablate_features(model, sae, latents, positions=slice(1, None))]


def random_draws(pool: Sequence[int], count: int, trials: int, seed: int, d_sae: int) -> list[list[int]]:
    """`trials` seeded draws of `count` latents from `pool` (from every latent when the pool is smaller)."""
    rng = random.Random(seed)
    source = list(pool) if len(pool) >= count else list(range(d_sae))
    return [sorted(rng.sample(source, count)) for _ in range(trials)]


def capability_ablation(
    model: HookedModel,
    sae: SAE,
    target: str,
    config: CapabilityConfig | None = None,
    capabilities: Sequence[Capability] | None = None,
) -> CapabilityResult:
    """Choose `config.latents` latents for `target` on the choosing halves, ablate them, and measure every
    capability (default: the built-in ones, `config.prompts` each) on the measuring halves, with random
    latents of the same number as the control."""
    config = config or CapabilityConfig()
    if capabilities is None:
        capabilities = build_capabilities(list(CAPABILITIES), config.prompts, config.seed)
    check_request(sae, target, [c.name for c in capabilities], config)
    site = check_sae_site(model, sae, None)
    progress = tqdm(total=len(capabilities) * 2, desc="capabilities", disable=not config.progress)
    attributions = {}
    for capability in capabilities:
        if config.rule == "contrast" or capability.name == target:
            attributions[capability.name] = latent_attribution(
                model, sae, capability.half(0), config.batch_size
            )
        progress.update()
    chosen = choose_latents(attributions, target, config.latents, config.rule)
    measured = {c.name: c.half(1) for c in capabilities}
    pool = firing_latents(model, sae, measured[target])
    draws = random_draws(pool, config.latents, config.random_trials, config.seed, sae.cfg.d_sae)
    result = CapabilityResult(target, chosen, config.rule, site, config=asdict(config))
    for name, capability in measured.items():
        accuracy, logprob = measure(model, capability, (), config.batch_size)
        ablated = measure(model, capability, ablation_hooks(model, sae, chosen), config.batch_size)
        randoms = [
            measure(model, capability, ablation_hooks(model, sae, d), config.batch_size) for d in draws
        ]
        random_mean = (
            torch.tensor(randoms, dtype=torch.float64).mean(0).tolist() if randoms else [math.nan, math.nan]
        )
        result.rows.append({"name": name, "prompts": len(capability.prompts), "accuracy": accuracy,
                            "accuracy_ablated": ablated[0], "accuracy_random": random_mean[0], "logprob": logprob,
                            "logprob_ablated": ablated[1], "logprob_random": random_mean[1]})  # fmt: skip
        progress.update()
    progress.close()
    fill_specificity(result)
    return result


def fill_specificity(result: CapabilityResult) -> None:
    """Specificity of the chosen and the random ablation, on accuracy and on log-prob."""
    for after, attribute in (("ablated", "specificity"), ("random", "random_specificity")):
        for metric, suffix in (("accuracy", ""), ("logprob", "_logprob")):
            drops = {r["name"]: r[metric] - r[f"{metric}_{after}"] for r in result.rows}
            target = drops.pop(result.target)
            setattr(result, attribute + suffix, specificity(target, list(drops.values())))
