"""Causal validation of a truth probe: steer along its direction while the model judges statements.

A probe that only reads is correlational. Here the probe's direction is added (+) or subtracted (−) at its
site while the model answers "<statement> This statement is" with " true" or " false", and we count how
often the judgement flips on the held-out statements. Perplexity on ordinary text at every strength shows
whether the model is merely broken, and a random direction of the same norm is the control.

- Direction: the probe scores `w · (x − mean) / scale + b`, so in residual-stream units the direction that
  raises its logit fastest is `w / scale` (the gradient); it is normalised to a unit vector `u`.
- Step: strength α adds `α · Δ · u`, where Δ is the gap between the mean projections `u · x` of the true
  and the false training statements (the probe's own split and token selection). At α = 1 a false
  statement's projection moves by the whole distance between the class means.
- Positions: `all` adds at every position of the prompt; `statement` only at the statement's own tokens.
  Perplexity is measured with the vector added at every position of ordinary text either way.
- Judgement: true when logit(" true") > logit(" false") at the last position. Flip rate: the share of
  statements judged true that are judged false under −α, and of those judged false judged true under +α.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rama.data import PackConfig, token_batches
from rama.errors import ConfigError, InputError
from rama.hooks.model import HookedModel
from rama.interventions.steering import Hook, Positions, add_vector, typical_norm
from rama.probes.datasets import ProbeDataset
from rama.probes.gather import gather
from rama.probes.splits import split_by_group
from rama.probes.training import TrainedProbe

JUDGE_TEMPLATE = "{statement} This statement is"
ANSWERS = (" true", " false")
POSITION_MODES = ("all", "statement")


@dataclass(frozen=True)
class CausalConfig:
    """How the truth direction is tested by steering."""

    strengths: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)  # α, in units of the class gap Δ along u
    positions: str = "all"  # all | statement
    template: str = JUDGE_TEMPLATE
    answers: tuple[str, str] = ANSWERS  # the judgement: logit(answers[0]) − logit(answers[1])
    random_directions: int = 3  # control directions of the same norm (results averaged)
    ppl_tokens: int = 4096  # ordinary text (built-in corpus, held-out documents) for perplexity
    ppl_context: int = 128
    corpus: str | None = None  # None: the built-in corpus
    seed: int = 0
    batch_size: int = 32
    progress: bool = True

    def __post_init__(self) -> None:
        if self.positions not in POSITION_MODES:
            raise ConfigError(f"positions {self.positions!r} is not one of {', '.join(POSITION_MODES)}")
        if self.template.count("{statement}") != 1:
            raise ConfigError(f"the judging template needs one {{statement}}; got {self.template!r}")
        if not self.strengths or any(not math.isfinite(s) or s <= 0 for s in self.strengths):
            raise ConfigError(f"strengths must be positive finite numbers; got {self.strengths}")
        if self.random_directions < 0 or self.ppl_tokens < self.ppl_context or self.batch_size < 1:
            raise ConfigError("random_directions ≥ 0, ppl_tokens ≥ ppl_context and batch_size ≥ 1 please")


@dataclass(frozen=True)
class JudgePrompt:
    """One judging prompt's tokens and where its statement lies in them."""

    tokens: tuple[int, ...]
    start: int  # first statement token
    stop: int  # one past the last statement token


@dataclass
class SteeringRow:
    """One direction at one strength: flip rates, mean change of the true − false logit, perplexity."""

    direction: str  # "probe" or "random" (mean over the random directions)
    strength: float
    true_to_false: float  # under −α, share of the statements judged true
    false_to_true: float  # under +α, share of the statements judged false
    shift_minus: float  # mean change of logit(" true") − logit(" false") under −α
    shift_plus: float
    perplexity_minus: float
    perplexity_plus: float


@dataclass
class CausalResult:
    site: str
    unit: float  # Δ: the class gap along u, the length of one strength step
    typical_norm: float  # the site's typical residual norm (for scale)
    items: int
    judged_true: int
    accuracy: float  # unsteered judgement accuracy on the held-out statements
    perplexity: float  # unsteered, on ordinary text
    rows: list[SteeringRow] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        head = ("| direction | α | α·Δ / typical norm | true→false (−) | false→true (+) | logit shift − / + "
                "| perplexity − / + |\n|---|---:|---:|---:|---:|---:|---:|\n")  # fmt: skip
        per_norm = self.unit / self.typical_norm if self.typical_norm > 0 else math.nan
        lines = [
            f"| {r.direction} | {r.strength:g} | {r.strength * per_norm:.3f} | "
            f"{r.true_to_false:.3f} | {r.false_to_true:.3f} | {r.shift_minus:+.2f} / {r.shift_plus:+.2f} | "
            f"{r.perplexity_minus:.2f} / {r.perplexity_plus:.2f} |"
            for r in self.rows
        ]
        return head + "\n".join(lines) + "\n"

    def figure(self, path: str | Path) -> Path:
        """Flip rate and perplexity against strength, probe direction against the random control."""
        from rama.plotting import pyplot, save_figure

        plt = pyplot()
        fig, (flips, ppl) = plt.subplots(1, 2, figsize=(10, 3.8))
        for name, style in (("probe", "-"), ("random", "--")):
            rows = [r for r in self.rows if r.direction == name]
            xs = [r.strength for r in rows]
            flips.plot(xs, [r.true_to_false for r in rows], style, marker="o", color="C3",
                       label=f"{name}: true→false (−)")  # fmt: skip
            flips.plot(xs, [r.false_to_true for r in rows], style, marker="s", color="C0",
                       label=f"{name}: false→true (+)")  # fmt: skip
            ppl.plot(xs, [r.perplexity_minus for r in rows], style, marker="o", color="C3", label=f"{name} −")
            ppl.plot(xs, [r.perplexity_plus for r in rows], style, marker="s", color="C0", label=f"{name} +")
        ppl.axhline(self.perplexity, color="grey", lw=0.8, label="unsteered")
        flips.set(xscale="log", xlabel="strength α (units of the class gap Δ)", ylabel="flip rate",
                  ylim=(-0.02, 1.02), title=f"judgement flips, {self.site}")  # fmt: skip
        ppl.set(xscale="log", yscale="log", xlabel="strength α", ylabel="perplexity, ordinary text",
                title="is the model still working?")  # fmt: skip
        strengths = sorted({r.strength for r in self.rows})
        for axis in (flips, ppl):
            axis.set_xticks(strengths, [f"{x:g}" for x in strengths])
            axis.minorticks_off()
        flips.legend(fontsize=7)
        ppl.legend(fontsize=7)
        fig.tight_layout()
        return save_figure(fig, path)


def flip_rates(base: torch.Tensor, minus: torch.Tensor, plus: torch.Tensor) -> tuple[float, float]:
    """(true→false under −, false→true under +) from `[n]` bool judgements (True = judged true); NaN
    where no statement was judged that way unsteered."""
    judged_false = ~base
    t2f = float((~minus[base]).float().mean()) if bool(base.any()) else math.nan
    f2t = float(plus[judged_false].float().mean()) if bool(judged_false.any()) else math.nan
    return t2f, f2t


def residual_direction(trained: TrainedProbe) -> torch.Tensor:
    """`[d_model]` unit vector along the probe's gradient in residual-stream units, `w / scale`."""
    probe = trained.probe
    if probe.latents is not None:
        raise InputError(
            "a ksparse probe reads SAE latents, not the residual stream: steer along a logistic, diffmean, "
            "lda, lat or ccs probe"
        )
    w = probe.direction.float() / probe.scale.float()
    norm = float(w.norm())
    if not math.isfinite(norm) or norm == 0.0:
        raise InputError("the probe's direction is zero or not finite: there is nothing to steer along")
    return w / norm


def class_gap(model: HookedModel, trained: TrainedProbe, train: ProbeDataset, direction: torch.Tensor,
              batch_size: int = 32, progress: bool = False) -> float:  # fmt: skip
    """Δ: mean projection on `direction` of the true statements minus that of the false ones, over the
    rows the probe was trained on (its token selection)."""
    gathered = gather(model, list(train.texts), [trained.site], trained.token, batch_size, progress)
    projection = gathered.acts[trained.site].float() @ direction  # [rows]
    labels = torch.tensor(train.labels)[gathered.item]
    if not (bool((labels == 1).any()) and bool((labels == 0).any())):
        raise InputError("the class gap needs true and false training statements")
    return float(projection[labels == 1].mean() - projection[labels == 0].mean())


def judge_prompts(model: HookedModel, statements: Sequence[str], template: str) -> list[JudgePrompt]:
    """Each statement put in the template, tokenised alone (no padding), with its statement's span."""
    prefix = template.split("{statement}")[0]
    prompts = []
    for statement in statements:
        full = model.to_tokens(template.format(statement=statement))[0].tolist()
        start = len(model.to_tokens(prefix)[0]) if prefix else 0
        stop = len(model.to_tokens(prefix + statement)[0])
        if model.to_tokens(prefix + statement)[0].tolist() != full[:stop]:
            raise InputError(
                f"the template {template!r} splits a token at the end of {statement!r}: put a space or "
                f"punctuation after {{statement}}"
            )
        prompts.append(JudgePrompt(tuple(full), start, stop))
    return prompts


def answer_ids(model: HookedModel, answers: tuple[str, str] = ANSWERS) -> tuple[int, int]:
    """Token ids of the two answers (" true", " false"); each must be one token."""
    ids = [model.to_tokens(word)[0].tolist() for word in answers]
    if any(len(i) != 1 for i in ids):
        raise InputError(
            f"{model.cfg.name}'s tokenizer splits {answers} into several tokens {ids}; give one-token answers"
        )
    return ids[0][0], ids[1][0]


def judge(model: HookedModel, prompts: Sequence[JudgePrompt], site: str, steer: torch.Tensor | None,
          mode: str = "all", batch_size: int = 32, answers: tuple[str, str] = ANSWERS) -> torch.Tensor:  # fmt: skip
    """`[n]` logit(" true") − logit(" false") at the last token, with `steer` (a `[d_model]` vector, or None)
    added at `site`. Prompts of the same length and statement span are batched without padding."""
    true_id, false_id = answer_ids(model, answers)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault((len(prompt.tokens), prompt.start, prompt.stop), []).append(i)
    out = torch.empty(len(prompts))
    for (_, start, stop), members in groups.items():
        positions: Positions = None if mode == "all" else list(range(start, stop))
        for chunk in range(0, len(members), batch_size):
            rows = members[chunk : chunk + batch_size]
            tokens = torch.tensor([prompts[i].tokens for i in rows])
            hooks = [] if steer is None else [add_vector(model, site, steer, 1.0, positions)]
            with torch.no_grad():
                last = model.run_with_hooks(tokens, hooks)[:, -1].float()
            out[rows] = (last[:, true_id] - last[:, false_id]).cpu()
    return out


def ordinary_text(
    model: HookedModel, tokens: int, context: int, seed: int, corpus: str | None = None
) -> torch.Tensor:
    """`[n, context]` tokens of the corpus's held-out documents (every 50th; built-in by default), no BOS."""
    config = PackConfig(context_size=context, prepend_bos=False, seed=seed, split="test")
    batches = list(token_batches(model.tokenizer, corpus, batch_size=1, config=config, max_tokens=tokens))
    if not batches:
        raise InputError(
            f"the corpus {corpus or 'built-in'} gave no {context}-token context for the perplexity check"
        )
    return torch.cat(batches)


def perplexity(model: HookedModel, text: torch.Tensor, hooks: Sequence[Hook], batch_size: int = 8) -> float:
    """exp(mean next-token cross-entropy) over `[n, context]` tokens with `hooks` active."""
    total, count = 0.0, 0
    for chunk in text.split(batch_size):
        with torch.no_grad():
            logits = model.run_with_hooks(chunk, list(hooks))[:, :-1].float()
        target = chunk[:, 1:].to(logits.device)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum")
        total, count = total + float(loss), count + target.numel()
    return math.exp(total / count)


def random_directions(count: int, width: int, seed: int) -> list[torch.Tensor]:
    """`count` seeded random unit vectors `[width]` (Gaussian, normalised)."""
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(count, width, generator=generator)
    return list(vectors / vectors.norm(dim=-1, keepdim=True))


@dataclass
class Steerer:
    """What every strength and direction of one run shares."""

    model: HookedModel
    site: str
    prompts: list[JudgePrompt]
    text: torch.Tensor  # [n, context] ordinary text for perplexity
    base: torch.Tensor  # [n] unsteered logit differences
    config: CausalConfig

    def judged(self, vector: torch.Tensor) -> torch.Tensor:
        """`[n]` logit differences with `vector` added at the site."""
        c = self.config
        return judge(self.model, self.prompts, self.site, vector, c.positions, c.batch_size, c.answers)

    def row(self, name: str, vectors: Sequence[torch.Tensor], strength: float) -> SteeringRow:
        """Flip rates, logit shifts and perplexity for ±`vectors` (averaged over them)."""
        values: list[list[float]] = []
        judged = self.base > 0
        for vector in vectors:
            minus, plus = (self.judged(sign * vector) for sign in (-1.0, 1.0))
            t2f, f2t = flip_rates(judged, minus > 0, plus > 0)
            ppl = [perplexity(self.model, self.text, [add_vector(self.model, self.site, sign * vector)])
                   for sign in (-1.0, 1.0)]  # fmt: skip
            shifts = [float((minus - self.base).mean()), float((plus - self.base).mean())]
            values.append([t2f, f2t, *shifts, *ppl])
        mean = torch.tensor(values).nanmean(0).tolist()
        return SteeringRow(name, strength, *mean)


def steer_truth_probe(
    model: HookedModel,
    trained: TrainedProbe,
    dataset: ProbeDataset,
    config: CausalConfig | None = None,
    on_row: Callable[[CausalResult], None] | None = None,
) -> CausalResult:
    """Steer along the probe's truth direction at its site while the model judges the held-out (test) statements
    of `dataset` (the probe's own split), against random directions of the same norm; see the module doc."""
    config = config or CausalConfig()
    split_meta = trained.meta.get("split", {})
    split = split_by_group(dataset, int(split_meta.get("seed", 0)), float(split_meta.get("val_fraction", 0.2)),
                           float(split_meta.get("test_fraction", 0.2)))  # fmt: skip
    direction = residual_direction(trained).to(model.device)
    unit = class_gap(
        model, trained, dataset.subset(split.train), direction, config.batch_size, config.progress
    )
    test = dataset.subset(split.test)
    prompts = judge_prompts(model, test.texts, config.template)
    base = judge(model, prompts, trained.site, None, config.positions, config.batch_size, config.answers)
    labels = torch.tensor(test.labels).bool()
    text = ordinary_text(model, config.ppl_tokens, config.ppl_context, config.seed, config.corpus)
    steerer = Steerer(model, trained.site, prompts, text, base, config)
    result = CausalResult(
        trained.site, abs(unit), typical_norm(model, trained.site), len(test), int((base > 0).sum()),
        float(((base > 0) == labels).float().mean()), perplexity(model, text, []), config=asdict(config),
    )  # fmt: skip
    controls = random_directions(config.random_directions, direction.shape[0], config.seed)
    steps = [
        (name, s) for s in config.strengths for name in ("probe", "random") if name == "probe" or controls
    ]
    for name, strength in tqdm(steps, desc="steering", disable=not config.progress):
        vectors = [direction] if name == "probe" else [c.to(direction) for c in controls]
        result.rows.append(steerer.row(name, [v * strength * abs(unit) for v in vectors], strength))
        if on_row is not None:  # e.g. print or save the rows so far: a long run can be read as it goes
            on_row(result)
    return result
