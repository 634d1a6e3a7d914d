"""The IOI circuit found as Wang et al. (2022) found it: path patching backwards from the logits.

Every step patches the path from one sender head to a set of receivers with the sender's output
from the ABC prompt (noising: the clean run with one head's path corrupted) and measures the mean
logit difference logit(IO) − logit(S). Effects are relative: (patched − clean) / clean, so −0.1 means
the path carries a tenth of the behaviour.

1. senders → logits: name movers (the logit difference falls; at END they attend to IO) and
   negative name movers (it rises; they attend to IO too and write against it);
2. senders → the strongest name movers' queries: S-inhibition heads (at END they attend to S2);
3. senders → the strongest S-inhibition heads' values: duplicate-token heads (at S2 they attend to
   S1) and induction heads (at S2 they attend to S1+1);
4. senders → the strongest induction heads' keys: previous-token heads (S1+1 attends to S1).

A head joins a class when its effect passes `threshold` and its attention fits the class; heads
that pass the threshold without the pattern are reported as unexplained. Receivers in later layers
than a sender are patched for it even when other receivers sit earlier (one band of senders per
receiver layer). The circuit's faithfulness is the IOI paper's: mean-ablate every head outside it
(the mean over the ABC prompts of the same template, position by position) and compare the logit
difference left with the model's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from rama.circuits.head_scores import attention_between
from rama.circuits.ioi_prompts import IOIPrompts, ioi_accuracy, ioi_logit_difference, ioi_prompts
from rama.circuits.logit_attribution import direct_logit_attribution
from rama.errors import ConfigError, InputError
from rama.hooks import HookFn
from rama.hooks.core import HookPoint
from rama.hooks.model import HookedModel
from rama.interventions.path_patching import Receiver, path_patching_senders
from rama.models.sites import block_site
from rama.plotting import pyplot, save_figure
from rama.sae.base import setting

Head = tuple[int, int]
CLASSES = (
    "name_mover",
    "negative_name_mover",
    "s_inhibition",
    "duplicate_token",
    "induction",
    "previous_token",
)
# attention name -> (query position, key position), both named in IOIPrompts.positions
ATTENTION = {
    "END->IO": ("END", "IO"),
    "END->S1": ("END", "S1"),
    "END->S2": ("END", "S2"),
    "S2->S1": ("S2", "S1"),
    "S2->S1+1": ("S2", "S1+1"),
    "S1+1->S1": ("S1+1", "S1"),
}
COLOURS = {
    "name_mover": "#d62728",
    "negative_name_mover": "#9467bd",
    "s_inhibition": "#1f77b4",
    "duplicate_token": "#2ca02c",
    "induction": "#ff7f0e",
    "previous_token": "#8c564b",
}


@dataclass(frozen=True)
class IOISearchConfig:
    """How the search runs (fields double as `rama circuits ioi` options)."""

    n: int = setting(32, "prompts in the search, dealt over the templates (each template one batch)")
    templates: int = setting(4, "templates used, the first N of the set")
    seed: int = setting(0, "seed of the prompts' names, places and objects")
    threshold: float = setting(
        0.02, "least |effect| (share of the clean logit difference) that puts a head in a class"
    )
    top: int = setting(3, "the strongest heads of a class are the next step's receivers")
    attention: float = setting(0.3, "least attention a head pays to the position its class is named for")

    def __post_init__(self) -> None:
        if self.n < 2 or self.templates < 1 or self.top < 1:
            raise ConfigError(
                f"n must be at least 2, templates and top at least 1; got n={self.n}, "
                f"templates={self.templates}, top={self.top}"
            )
        if not 0 < self.threshold < 1 or not 0 <= self.attention < 1:
            raise ConfigError(
                f"threshold must lie in (0, 1) and attention in [0, 1); got {self.threshold} and {self.attention}"
            )


@dataclass(frozen=True)
class HeadEffect:
    layer: int
    head: int
    effect: float  # relative change of the mean logit difference when its path is patched
    attention: float  # attention to the position its class is named for

    @property
    def label(self) -> str:
        return f"{self.layer}.{self.head}"


@dataclass(frozen=True)
class IOICircuit:
    """What the search found: head classes with effects, the sweeps behind them, faithfulness."""

    model: str
    n_prompts: int
    logit_difference: float  # mean over prompts, clean run
    accuracy: float  # share of prompts with logit(IO) > logit(S)
    top1_accuracy: float  # share whose top prediction at END is IO
    classes: dict[str, list[HeadEffect]]
    unexplained: dict[str, list[HeadEffect]]  # per step: heads over the threshold without the pattern
    receivers: dict[str, list[str]]  # per step: "layer.head.input"
    effects: dict[str, torch.Tensor]  # per step: [layer, head], NaN where a head could not send
    attention: dict[str, torch.Tensor]  # ATTENTION name -> [layer, head], clean run
    faithfulness: dict[str, float]
    completeness: dict[str, dict[str, float]]
    minimality: dict[str, float]  # head -> relative drop of F(C) when it alone leaves the circuit
    config: dict[str, Any]
    seconds: float

    def heads(self, name: str) -> list[Head]:
        return [(h.layer, h.head) for h in self.classes[name]]

    def circuit(self) -> list[Head]:
        return sorted({head for name in CLASSES for head in self.heads(name)})

    def to_json(self) -> dict[str, Any]:
        def table(values: torch.Tensor) -> list[list[float | None]]:
            return [[None if v != v else round(float(v), 6) for v in row] for row in values.tolist()]

        out = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("classes", "unexplained", "effects", "attention")
        }
        out["classes"] = {k: [asdict(h) for h in v] for k, v in self.classes.items()}
        out["unexplained"] = {k: [asdict(h) for h in v] for k, v in self.unexplained.items()}
        out["circuit"] = [list(h) for h in self.circuit()]
        out["effects"] = {k: table(v) for k, v in self.effects.items()}
        out["attention"] = {k: table(v) for k, v in self.attention.items()}
        return out


def weighted(values: Sequence[torch.Tensor | float], groups: Sequence[IOIPrompts]) -> Any:
    """The mean over prompts of per-group means (groups weighted by their size)."""
    total = sum(len(g) for g in groups)
    return sum(v * len(g) for v, g in zip(values, groups, strict=True)) / total


def clean_statistics(
    model: HookedModel, groups: Sequence[IOIPrompts]
) -> tuple[float, float, float, dict[str, torch.Tensor]]:
    """(mean logit difference, accuracy, top-1 accuracy, attention [layer, head] by ATTENTION name)."""
    differences, correct, top, attention = [], [], [], []
    for group in groups:
        with torch.no_grad():
            logits, cache = model.run_with_cache(group.clean, names=lambda s: s.endswith("attn.hook_pattern"))
        assert logits is not None
        patterns = cache.stack("attn.hook_pattern").float().cpu()  # [layer, batch, head, q, k]
        differences.append(float(ioi_logit_difference(logits, group).mean()))
        above, first = ioi_accuracy(logits, group)
        correct.append(above)
        top.append(first)
        attention.append(
            {
                name: attention_between(patterns, group.positions[q], group.positions[k])
                for name, (q, k) in ATTENTION.items()
            }
        )
    mean_attention = {name: weighted([a[name] for a in attention], groups) for name in ATTENTION}
    return weighted(differences, groups), weighted(correct, groups), weighted(top, groups), mean_attention


def path_effects(
    model: HookedModel, groups: Sequence[IOIPrompts], receivers: Sequence[Receiver], clean: float, step: str
) -> torch.Tensor:
    """`[layer, head]` relative effect of each head's path to the receivers (NaN where it cannot send).
    Senders are taken in bands: those before the first receiver's layer reach every receiver, those
    between two receiver layers reach the later receivers only."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if any(r.input == "logits" for r in receivers):
        bands = [(list(receivers), [(layer, h) for layer in range(n_layers) for h in range(n_heads)])]
    else:
        edges = sorted({r.layer for r in receivers})
        bands = [
            (
                [r for r in receivers if r.layer >= top],
                [(layer, h) for layer in range(low, top) for h in range(n_heads)],
            )
            for low, top in zip([0, *edges[:-1]], edges, strict=True)
        ]
    patched = torch.full((n_layers, n_heads), float("nan"))
    jobs = [(band, group) for band in bands if band[1] for group in groups]
    sums = torch.zeros(n_layers, n_heads)
    for (band_receivers, senders), group in tqdm(jobs, desc=f"path patching → {step}", leave=False):

        def metric(logits: torch.Tensor, group: IOIPrompts = group) -> torch.Tensor:
            return ioi_logit_difference(logits, group).mean()

        result = path_patching_senders(
            model, group.clean, group.corrupted, metric, band_receivers, "noising", senders
        )
        rows, cols = zip(*senders, strict=True)
        sums[list(rows), list(cols)] += result.values[list(rows), list(cols)] * len(group)
    swept = [s for band in bands for s in band[1]]
    if swept:
        rows, cols = zip(*swept, strict=True)
        patched[list(rows), list(cols)] = sums[list(rows), list(cols)] / sum(len(g) for g in groups)
    return (patched - clean) / clean


def classify(
    effects: torch.Tensor,
    attention: dict[str, torch.Tensor],
    config: IOISearchConfig,
    sign: int,
    rule: dict[str, str],
) -> tuple[dict[str, list[HeadEffect]], list[HeadEffect]]:
    """Heads whose effect passes the threshold in direction `sign`, sorted strongest first, each put
    in the class of `rule` ({class: attention name}) whose attention is its largest among the rule's
    and at least `config.attention`; the rest are unexplained."""
    found: dict[str, list[HeadEffect]] = {name: [] for name in rule}
    unexplained = []
    passing = torch.nan_to_num(effects * sign, nan=0.0) >= config.threshold
    for layer, head in sorted(passing.nonzero().tolist(), key=lambda lh: -abs(float(effects[lh[0], lh[1]]))):
        scores = {name: float(attention[key][layer, head]) for name, key in rule.items()}
        best = max(scores, key=lambda name: scores[name])
        entry = HeadEffect(layer, head, float(effects[layer, head]), scores[best])
        if scores[best] >= config.attention:
            found[best].append(entry)
        else:
            unexplained.append(entry)
    return found, unexplained


def name_mover_rule(attention: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """END→IO where it is the largest of END's attention to the three names, else 0."""
    names = torch.stack([attention["END->IO"], attention["END->S1"], attention["END->S2"]])
    return {"END->IO": torch.where(names.argmax(0) == 0, attention["END->IO"], 0.0)}


def mean_ablation_hooks(
    model: HookedModel, reference: torch.Tensor, keep: set[Head]
) -> list[tuple[str, HookFn]]:
    """Hooks replacing every head outside `keep` by its mean over `reference [batch, pos]` (the ABC
    prompts of one template), position by position; one forward caches every layer's `hook_z`."""
    with torch.no_grad():
        _, cache = model.run_with_cache(reference, names=lambda s: s.endswith("attn.hook_z"))
    hooks: list[tuple[str, HookFn]] = []
    for layer in range(model.cfg.n_layers):
        ablate = [h for h in range(model.cfg.n_heads) if (layer, h) not in keep]
        if not ablate:
            continue
        site = block_site(layer, "attn.hook_z")
        mean = cache[site].mean(0, keepdim=True)  # [1, pos, head, d_head]

        def hook(
            z: torch.Tensor, point: HookPoint, mean: torch.Tensor = mean, ablate: list[int] = ablate
        ) -> torch.Tensor:
            out = z.clone()
            out[:, :, ablate] = mean[:, :, ablate].to(z.dtype).expand(z.shape[0], -1, -1, -1)
            return out

        hooks.append((site, hook))
    return hooks


def kept_difference(model: HookedModel, groups: Sequence[IOIPrompts], keep: set[Head]) -> float:
    """Mean logit difference with every head outside `keep` mean-ablated (per template)."""
    values = []
    for group in groups:
        hooks = mean_ablation_hooks(model, group.corrupted, keep)
        with torch.no_grad():
            values.append(float(ioi_logit_difference(model.run_with_hooks(group.clean, hooks), group).mean()))
    return float(weighted(values, groups))


def faithfulness_checks(
    model: HookedModel, groups: Sequence[IOIPrompts], classes: dict[str, list[HeadEffect]], clean: float
) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, float]]:
    """(faithfulness, completeness per class, minimality per head). F(X) is the logit difference with
    only X's heads left: faithfulness F(C)/F(M); completeness compares F(C∖K) with F(M∖K) for each
    class K (equal for a complete circuit); minimality is each head's share of F(C)."""
    every = {(layer, h) for layer in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)}
    circuit = {(e.layer, e.head) for entries in classes.values() for e in entries}
    kept = kept_difference(model, groups, circuit)
    faithfulness = {
        "model": clean,
        "circuit": kept,
        "no_heads": kept_difference(model, groups, set()),
        "share_kept": kept / clean,
        "heads_in_circuit": float(len(circuit)),
    }
    completeness = {}
    for name, entries in classes.items():
        removed = {(e.layer, e.head) for e in entries}
        if removed:
            completeness[name] = {
                "circuit_without": kept_difference(model, groups, circuit - removed),
                "model_without": kept_difference(model, groups, every - removed),
            }
    minimality = {
        f"{layer}.{head}": (kept - kept_difference(model, groups, circuit - {(layer, head)})) / kept
        for layer, head in tqdm(sorted(circuit), desc="minimality", leave=False)
    }
    return faithfulness, completeness, minimality


def strongest(entries: list[HeadEffect], top: int) -> list[HeadEffect]:
    return sorted(entries, key=lambda e: -abs(e.effect))[:top]


def search_steps(
    model: HookedModel,
    groups: Sequence[IOIPrompts],
    config: IOISearchConfig,
    clean: float,
    attention: dict[str, torch.Tensor],
) -> tuple[
    dict[str, list[HeadEffect]], dict[str, list[HeadEffect]], dict[str, list[str]], dict[str, torch.Tensor]
]:
    """The four path-patching steps: (classes, unexplained, receivers, effects), each keyed by step."""
    classes: dict[str, list[HeadEffect]] = {name: [] for name in CLASSES}
    unexplained, receivers, effects = {}, {}, {}
    to_io = name_mover_rule(attention)
    effects["logits"] = path_effects(model, groups, [Receiver.logits()], clean, "logits")
    receivers["logits"] = ["logits"]
    found, unexplained["logits"] = classify(effects["logits"], to_io, config, -1, {"name_mover": "END->IO"})
    negative, extra = classify(effects["logits"], to_io, config, 1, {"negative_name_mover": "END->IO"})
    raw = attention["END->IO"]  # what an unexplained head really pays to IO, not the rule's 0
    unexplained["logits"] = [
        replace(e, attention=float(raw[e.layer, e.head])) for e in unexplained["logits"] + extra
    ]
    classes.update(found, **negative)
    steps = [
        ("name_mover_queries", "name_mover", "q", {"s_inhibition": "END->S2"}),
        ("s_inhibition_values", "s_inhibition", "v", {"duplicate_token": "S2->S1", "induction": "S2->S1+1"}),
        ("induction_keys", "induction", "k", {"previous_token": "S1+1->S1"}),
    ]
    for step, source, input_, rule in steps:
        chosen = [Receiver(e.layer, e.head, input_) for e in strongest(classes[source], config.top)]
        receivers[step] = [f"{r.layer}.{r.head}.{r.input}" for r in chosen]
        if not chosen or min(r.layer for r in chosen) == 0:
            continue  # no receivers, or none any head could send to
        effects[step] = path_effects(model, groups, chosen, clean, step)
        found, unexplained[step] = classify(effects[step], attention, config, -1, rule)
        classes.update(found)
    return classes, unexplained, receivers, effects


def find_ioi_circuit(
    model: HookedModel, groups: Sequence[IOIPrompts] | None = None, config: IOISearchConfig | None = None
) -> IOICircuit:
    """Path-patch the IOI circuit of `model` on `groups` (default: `ioi_prompts` of the model's
    tokenizer with the config's n, templates and seed) and measure its faithfulness."""
    config = config or IOISearchConfig()
    started = time.perf_counter()
    if groups is None:
        groups = ioi_prompts(model.tokenizer, config.n, config.seed, n_templates=config.templates)
    if not groups:
        raise InputError("the IOI search needs at least one group of prompts")
    clean, accuracy, top1, attention = clean_statistics(model, groups)
    if clean <= 0:
        raise InputError(
            f"the model does not do the task on these prompts (mean logit difference {clean:.3f} ≤ 0): "
            "path-patching effects relative to it would be meaningless"
        )
    classes, unexplained, receivers, effects = search_steps(model, groups, config, clean, attention)
    faithfulness, completeness, minimality = faithfulness_checks(model, groups, classes, clean)
    return IOICircuit(
        model=model.cfg.name,
        n_prompts=sum(len(g) for g in groups),
        logit_difference=clean,
        accuracy=accuracy,
        top1_accuracy=top1,
        classes=classes,
        unexplained=unexplained,
        receivers=receivers,
        effects=effects,
        attention=attention,
        faithfulness=faithfulness,
        completeness=completeness,
        minimality=minimality,
        config=asdict(config),
        seconds=time.perf_counter() - started,
    )


def ioi_circuit_figure(record: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """The circuit as a layer × head grid, layers top to bottom: every head a grey dot, each found
    head coloured by class and labelled with its effect, arrows from each class to the receivers it
    was found through. `record` is `IOICircuit.to_json()`."""
    plt = pyplot()
    n_layers = len(record["attention"]["END->IO"])
    n_heads = len(record["attention"]["END->IO"][0])
    figure, ax = plt.subplots(figsize=(1.0 + 0.75 * n_heads, 1.2 + 0.32 * n_layers))
    grid = [(h, layer) for layer in range(n_layers) for h in range(n_heads)]
    ax.scatter([h for h, _ in grid], [layer for _, layer in grid], s=14, color="#d0d0d0", zorder=1)
    where: dict[tuple[int, int], str] = {}
    for name in CLASSES:
        for entry in record["classes"].get(name, []):
            where[(entry["layer"], entry["head"])] = name
            ax.scatter(
                entry["head"], entry["layer"], s=150, color=COLOURS[name], zorder=3, edgecolors="black"
            )
            ax.annotate(f"{entry['effect']:+.2f}", (entry["head"], entry["layer"]), xytext=(7, -3),
                        textcoords="offset points", fontsize=7)  # fmt: skip
    arrow = {"arrowstyle": "-|>", "color": "#707070", "lw": 0.7, "alpha": 0.7, "shrinkA": 7, "shrinkB": 8}
    ax.text((n_heads - 1) / 2, n_layers + 0.2, "logits", ha="center", va="center", fontsize=9,
            bbox={"boxstyle": "round", "facecolor": "#f4f4f4", "edgecolor": "#909090"})  # fmt: skip
    for step, labels in record["receivers"].items():
        for label in labels:
            if label == "logits":
                for name in ("name_mover", "negative_name_mover"):
                    for entry in record["classes"].get(name, []):
                        ax.annotate("", xy=((n_heads - 1) / 2, n_layers), xytext=(entry["head"], entry["layer"]),
                                    arrowprops=arrow, zorder=2)  # fmt: skip
                continue
            layer, head, _ = label.split(".")
            for _, entry in _senders_of(step, record):
                ax.annotate("", xy=(int(head), int(layer)), xytext=(entry["head"], entry["layer"]),
                            arrowprops=arrow, zorder=2)  # fmt: skip
    for name in CLASSES:
        ax.scatter([], [], s=80, color=COLOURS[name], edgecolors="black", label=name.replace("_", " "))
    ax.set_ylim(n_layers + 0.7, -0.5)  # layer 0 at the top
    ax.set_xlim(-0.7, n_heads - 0.3 + 0.6)
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers))
    ax.set_xlabel("head (numbers: path-patching effect, share of the logit difference)", fontsize=8)
    ax.set_ylabel("layer")
    ax.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.08 - 1.2 / n_layers), ncol=3, fontsize=8, frameon=False
    )
    share = record["faithfulness"]["share_kept"]
    ax.set_title(
        title or f"IOI circuit: {len(where)} heads keep {share:.0%} of the logit difference", fontsize=10
    )
    return save_figure(figure, path)


def _senders_of(step: str, record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The heads a step found (they send to that step's receivers)."""
    names = {
        "name_mover_queries": ["s_inhibition"],
        "s_inhibition_values": ["duplicate_token", "induction"],
        "induction_keys": ["previous_token"],
    }.get(step, [])
    return [(name, entry) for name in names for entry in record["classes"].get(name, [])]


def ioi_summary(
    model: HookedModel, n: int = 16, seed: int = 0, top: int = 3, attention: float = 0.3
) -> dict[str, Any]:
    """A few seconds' look at IOI for `rama demo`: the mean logit difference, the accuracies, and the
    heads writing most directly into logit(IO) − logit(S) at END (direct logit attribution, no path
    patching). `name_movers` keeps those that attend most to IO at END (at least `attention`);
    `top_direct_heads` are the strongest writers whatever they attend to."""
    groups = ioi_prompts(model.tokenizer, n, seed)
    difference, accuracy, top1, pattern = clean_statistics(model, groups)
    record: dict[str, Any] = {
        "prompts": sum(len(g) for g in groups),
        "templates": len(groups),
        "logit_difference": difference,
        "accuracy": accuracy,
        "top1_accuracy": top1,
        "name_movers": [],
        "top_direct_heads": [],
    }
    heads = [direct_logit_attribution(model, g.clean, g.io, g.s).heads for g in groups]
    if all(h is not None for h in heads):
        mean = weighted([h.float().mean(0).cpu() for h in heads if h is not None], groups)  # [layer, head]
        to_io = name_mover_rule(pattern)["END->IO"] >= attention

        def strongest_of(values: torch.Tensor) -> list[list[float]]:
            best = values.flatten().topk(top)
            return [[int(i) // values.shape[1], int(i) % values.shape[1], round(float(v), 4)]
                    for v, i in zip(best.values, best.indices, strict=True) if v > float("-inf")]  # fmt: skip

        record["top_direct_heads"] = strongest_of(mean)
        record["name_movers"] = strongest_of(torch.where(to_io, mean, float("-inf")))
    return record
