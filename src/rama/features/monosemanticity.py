"""Features are not neurons, measured: how monosemantic each SAE latent and each MLP neuron of the same
block is, from the feature store's top examples, as two distributions side by side.

Per unit, over its `top_k` strongest examples (docs/features.md, "Features are not neurons"):
- token concentration: the share of the examples whose token is the unit's most frequent one, and the
  entropy (in bits) of the examples' token distribution;
- context coherence: the mean pairwise cosine of the MiniLM embeddings of the examples' context windows,
  against the same statistic for sets of `top_k` windows drawn at random from every window embedded
  (a seeded draw), which is what unrelated contexts give.
Dead units (no examples) and rare ones (fewer than `top_k`) are counted and left out.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import torch
from tqdm import tqdm

from rama.activations.sentence_embeddings import SentenceEmbedder, sentence_embedder
from rama.errors import ConfigError, InputError
from rama.features.analysis import setting
from rama.features.store import FeatureStore
from rama.plotting import pyplot, save_figure

KINDS = ("latent", "neuron")
KIND_NAMES = {"latent": "features (SAE latents)", "neuron": "neurons (MLP)"}
# Special-token markers a window's text leaves out: <|...|> (SmolLM2, GPT-2), <s> </s> <pad> <unk>, [CLS] ...
SPECIAL_MARKER = re.compile(r"<\|[^|<>]*\|>|</?s>|<pad>|<unk>|\[(?:CLS|SEP|PAD|UNK|MASK)\]")


@dataclass(frozen=True)
class CompareConfig:
    """What `rama features compare` measures and where it draws the lines."""

    top_k: int = setting(20, "top examples per unit the measures use; units with fewer are left out as rare")
    coherence_units: int = setting(500, "units per kind whose context coherence is measured (seeded; 0: all)")
    baseline_sets: int = setting(2000, "random window sets drawn for the coherence baseline")
    concentration_threshold: float = setting(0.5, "a unit is token-concentrated at this share or above")
    entropy_threshold: float = setting(1.0, "a unit is token-specific at this entropy (bits) or below")
    baseline_quantile: float = setting(0.95, "a unit is coherent above this quantile of random sets")
    seed: int = setting(0, "seed of the unit sample and of the random sets")
    progress: bool = setting(True, "show progress bars")

    def __post_init__(self) -> None:
        if self.top_k < 2 or self.baseline_sets < 1 or self.coherence_units < 0:
            raise ConfigError(
                f"top_k must be ≥ 2, baseline_sets ≥ 1 and coherence_units ≥ 0; got {self.top_k}, "
                f"{self.baseline_sets} and {self.coherence_units}"
            )
        if not 0 < self.baseline_quantile < 1 or not 0 < self.concentration_threshold <= 1:
            raise ConfigError(
                "baseline_quantile must be in (0, 1) and concentration_threshold in (0, 1], not "
                f"{self.baseline_quantile} and {self.concentration_threshold}"
            )


@dataclass(frozen=True)
class Window:
    """One example's context window: where it sits in the analysed stream and its text."""

    token_index: int  # global index of the example's token
    start: int  # global index of the window's first token
    stop: int  # one past its last
    token_id: int  # the example's token
    text: str
    firing: tuple[int, ...] = ()  # global indices of the window's tokens where the unit is above 0


def window_text(tokens: Sequence[str]) -> str:
    """A window's token strings joined into text, special-token markers left out."""
    return SPECIAL_MARKER.sub("", "".join(tokens)).strip()


def window_of(example: Mapping[str, Any]) -> Window:
    """The Window of one row of `FeatureStore.examples`."""
    start = int(example["token_index"]) - int(example["focus"])
    firing = tuple(start + j for j, a in enumerate(example["activations"]) if a > 0)
    return Window(int(example["token_index"]), start, start + len(example["tokens"]),
                  int(example["token_ids"][example["focus"]]), window_text(example["tokens"]), firing)  # fmt: skip


def unit_windows(
    store: FeatureStore, kind: str, samples: Sequence[str] = ("top",)
) -> dict[int, list[Window]]:
    """Every unit of `kind` → the windows of its examples of the given samples (one per token index,
    strongest top example first); a dead unit maps to an empty list."""
    ids = [row["id"] for row in store.units_page(kind, limit=max(1, store.count(kind)))]
    windows: dict[int, list[Window]] = {}
    for unit in ids:
        seen: dict[int, Window] = {}
        for sample in samples:
            for example in store.examples(unit, sample, kind):
                seen.setdefault(int(example["token_index"]), window_of(example))
        windows[unit] = list(seen.values())
    return windows


def token_concentration(token_ids: Sequence[int]) -> tuple[float, float]:
    """(share of the examples on the most frequent token, entropy of the token distribution in bits)."""
    if not token_ids:
        raise InputError("token concentration needs at least one example token")
    n = len(token_ids)
    counts = Counter(token_ids).values()
    entropy = -sum(c / n * math.log2(c / n) for c in counts)
    return max(counts) / n, entropy + 0.0  # + 0.0: one token gives 0.0, not -0.0


def mean_pairwise_cosine(vectors: torch.Tensor) -> float:
    """Mean cosine over the n(n-1)/2 distinct pairs of rows of `[n, d]` (n ≥ 2), from one sum:
    Σ_{i≠j} u_i·u_j = ‖Σ u_i‖² − Σ ‖u_i‖²."""
    if vectors.shape[0] < 2:
        raise InputError(f"a mean pairwise cosine needs at least 2 vectors, got {vectors.shape[0]}")
    unit = torch.nn.functional.normalize(vectors.double(), dim=-1)  # [n, d]
    total = unit.sum(0)  # [d]
    n = unit.shape[0]
    return float((total @ total - (unit * unit).sum()) / (n * (n - 1)))


def random_set_coherence(pool: torch.Tensor, size: int, draws: int, seed: int) -> torch.Tensor:
    """Mean pairwise cosine of `draws` sets of `size` rows of the unit vectors `pool` `[m, d]`, each set
    drawn uniformly without replacement (torch's multinomial, seeded): `[draws]`."""
    if pool.shape[0] < size:
        raise InputError(f"the random baseline needs at least {size} windows, only {pool.shape[0]} exist")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.multinomial(torch.ones(draws, pool.shape[0]), size, generator=generator)  # [draws, size]
    total = pool.double()[chosen].sum(1)  # [draws, d]
    return ((total * total).sum(-1) - size) / (size * (size - 1))


@dataclass(frozen=True)
class UnitMeasure:
    kind: str
    id: int
    top_token: int
    concentration: float
    entropy_bits: float
    coherence: float | None = None  # None where the unit was not in the coherence sample


@dataclass(frozen=True)
class Baseline:
    """Mean pairwise cosine of random sets of `size` windows: its mean and its `quantile` point."""

    size: int
    draws: int
    pool: int  # distinct windows drawn from
    mean: float
    quantile: float
    threshold: float


@dataclass
class Comparison:
    """Per-unit measures of latents and neurons, the random baseline and the counts left out."""

    config: CompareConfig
    units: list[UnitMeasure]
    baseline: Baseline | None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # kind → total, dead, rare
    baseline_values: list[float] = field(default_factory=list)  # each random set's coherence

    def of(self, kind: str) -> list[UnitMeasure]:
        return [u for u in self.units if u.kind == kind]

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per kind: counts, and per measure the median and the share of units past its threshold."""
        return {kind: {**counts, **self.kind_summary(kind)} for kind, counts in self.counts.items()}

    def kind_summary(self, kind: str) -> dict[str, Any]:
        cfg, units = self.config, self.of(kind)
        coherent = [u.coherence for u in units if u.coherence is not None]
        out: dict[str, Any] = {"measured": len(units), "coherence_measured": len(coherent)}
        if units:
            out["concentration_median"] = median(u.concentration for u in units)
            out["concentration_share"] = share(u.concentration >= cfg.concentration_threshold for u in units)
            out["entropy_bits_median"] = median(u.entropy_bits for u in units)
            out["entropy_share"] = share(u.entropy_bits <= cfg.entropy_threshold for u in units)
        if coherent and self.baseline is not None:
            out["coherence_median"] = median(coherent)
            out["coherence_excess_median"] = median(coherent) - self.baseline.mean
            out["coherence_share"] = share(c > self.baseline.threshold for c in coherent)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "baseline": None if self.baseline is None else asdict(self.baseline),
            "summary": self.summary(),
            "units": [asdict(u) for u in self.units],
        }


def share(flags: Any) -> float:
    values = list(flags)
    return sum(values) / len(values) if values else float("nan")


def compare_units(
    store: FeatureStore, embedder: SentenceEmbedder | None = None, config: CompareConfig | None = None
) -> Comparison:
    """Token concentration of every live unit of both kinds, and context coherence of a seeded sample of
    `coherence_units` per kind against random sets of windows."""
    config = config or CompareConfig()
    counts: dict[str, dict[str, int]] = {}
    measured: dict[str, dict[int, list[Window]]] = {}
    for kind in KINDS:
        windows = unit_windows(store, kind)
        if not windows:
            continue
        dead = sum(not w for w in windows.values())
        measured[kind] = {i: w[: config.top_k] for i, w in windows.items() if len(w) >= config.top_k}
        counts[kind] = {
            "total": len(windows),
            "dead": dead,
            "rare": len(windows) - dead - len(measured[kind]),
        }
    if not measured:
        raise InputError(f"{str(store.path)!r} holds no units")
    sampled = {kind: coherence_sample(sorted(units), kind, config) for kind, units in measured.items()}
    texts = {w.token_index: w.text for kind, ids in sampled.items() for i in ids for w in measured[kind][i]}
    coherence: dict[tuple[str, int], float] = {}
    baseline: Baseline | None = None
    baseline_values: list[float] = []
    if len(texts) >= config.top_k:
        embedder = embedder or sentence_embedder()
        order = sorted(texts)
        vectors = embedder([texts[t] for t in order], progress=config.progress)  # [windows, d]
        row = {t: r for r, t in enumerate(order)}
        for kind, ids in sampled.items():
            for i in tqdm(ids, desc=f"coherence of {kind}s", disable=not config.progress):
                rows = [row[w.token_index] for w in measured[kind][i]]
                coherence[kind, i] = mean_pairwise_cosine(vectors[rows])
        baseline, baseline_values = random_baseline(vectors, config)
    units = [measure(kind, i, windows, coherence.get((kind, i))) for kind, by_id in measured.items()
             for i, windows in by_id.items()]  # fmt: skip
    return Comparison(config, units, baseline, counts, baseline_values)


def coherence_sample(ids: list[int], kind: str, config: CompareConfig) -> list[int]:
    """`coherence_units` of the ids (all when 0 or fewer exist), drawn by Python's `random.Random`
    seeded with the string "SEED:KIND", sorted."""
    if config.coherence_units == 0 or config.coherence_units >= len(ids):
        return ids
    return sorted(random.Random(f"{config.seed}:{kind}").sample(ids, config.coherence_units))


def random_baseline(vectors: torch.Tensor, config: CompareConfig) -> tuple[Baseline, list[float]]:
    """The Baseline of random sets of `top_k` windows, and each set's coherence."""
    values = random_set_coherence(vectors, config.top_k, config.baseline_sets, config.seed)  # [draws]
    baseline = Baseline(size=config.top_k, draws=config.baseline_sets, pool=vectors.shape[0],
                        mean=float(values.mean()), quantile=config.baseline_quantile,
                        threshold=float(torch.quantile(values, config.baseline_quantile)))  # fmt: skip
    return baseline, values.tolist()


def measure(kind: str, id: int, windows: list[Window], coherence: float | None) -> UnitMeasure:
    tokens = [w.token_id for w in windows]
    top_token = Counter(tokens).most_common(1)[0][0]
    concentration, entropy = token_concentration(tokens)
    return UnitMeasure(kind, id, top_token, concentration, entropy, coherence)


def comparison_table(comparison: Comparison) -> str:
    """The medians and shares, latents beside neurons, as plain text."""
    cfg, summary, base = comparison.config, comparison.summary(), comparison.baseline
    kinds = list(summary)
    rows: list[tuple[str, list[str]]] = [
        ("units (dead / rare, left out)", [f"{s['total']} ({s['dead']} / {s['rare']})" for s in summary.values()]),
        (f"token concentration, median (top {cfg.top_k})", cells(summary, "concentration_median", "{:.2f}")),
        (f"  share ≥ {cfg.concentration_threshold:g}", cells(summary, "concentration_share", "{:.1%}")),
        ("token entropy (bits), median", cells(summary, "entropy_bits_median", "{:.2f}")),
        (f"  share ≤ {cfg.entropy_threshold:g} bit", cells(summary, "entropy_share", "{:.1%}")),
        ("units measured for coherence", cells(summary, "coherence_measured", "{}")),
        ("context coherence, median", cells(summary, "coherence_median", "{:.3f}")),
    ]  # fmt: skip
    if base is not None:
        rows += [
            (f"  minus random sets' mean ({base.mean:.3f})", cells(summary, "coherence_excess_median", "{:+.3f}")),
            (f"  share > random p{base.quantile * 100:g} ({base.threshold:.3f})",
             cells(summary, "coherence_share", "{:.1%}")),
        ]  # fmt: skip
    width = max(len(label) for label, _ in rows)
    lines = [f"{'':{width}}  " + "  ".join(f"{KIND_NAMES[k].split(' ')[0]:>16}" for k in kinds)]
    lines += [f"{label:{width}}  " + "  ".join(f"{v:>16}" for v in values) for label, values in rows]
    return "\n".join(lines)


def cells(summary: dict[str, dict[str, Any]], key: str, spec: str) -> list[str]:
    return [spec.format(s[key]) if key in s else "–" for s in summary.values()]


def plot_comparison(comparison: Comparison, path: str | Path) -> Path:
    """Three panels (concentration, entropy, coherence), latents and neurons overlaid as shares of units;
    the coherence panel also shows the random window sets."""
    plt = pyplot()
    k = comparison.config.top_k
    figure, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    panels = [
        ("concentration", f"token concentration (share of top {k} on one token)",
         [(i - 0.5) / k for i in range(1, k + 2)]),  # one bin per possible share 1/k … 1
        ("entropy_bits", f"token entropy of the top {k} (bits)", linear_bins(0.0, math.log2(k) + 1e-9, 30)),
        ("coherence", "context coherence (mean pairwise MiniLM cosine)", coherence_bins(comparison)),
    ]  # fmt: skip
    colours = {"latent": "#1f6fb4", "neuron": "#e07b28"}
    for axis, (name, title, bins) in zip(axes, panels, strict=True):
        for kind in comparison.counts:
            values = [getattr(u, name) for u in comparison.of(kind) if getattr(u, name) is not None]
            if values:
                axis.hist(values, bins=bins, weights=[1 / len(values)] * len(values), histtype="stepfilled",
                          alpha=0.45, color=colours[kind], edgecolor=colours[kind], linewidth=1.2,
                          label=f"{KIND_NAMES[kind]}: n={len(values)}, median {median(values):.2f}")  # fmt: skip
        if name == "coherence" and comparison.baseline is not None:
            base, draws = comparison.baseline, comparison.baseline_values
            axis.hist(draws, bins=bins, weights=[1 / len(draws)] * len(draws), histtype="step", color="0.35",
                      linewidth=1.2, label=f"random sets of {k} windows: mean {base.mean:.2f}")  # fmt: skip
            axis.axvline(base.threshold, color="0.35", linestyle=":",
                         label=f"random sets' p{base.quantile * 100:g}: {base.threshold:.2f}")  # fmt: skip
        axis.set_title(title, fontsize=10)
        axis.set_ylabel("share of units")
        axis.legend(fontsize=8, frameon=False)
        axis.spines[["top", "right"]].set_visible(False)
    figure.suptitle("Features vs neurons of the same block", fontsize=12)
    figure.tight_layout()
    return save_figure(figure, path)


def linear_bins(low: float, high: float, count: int) -> list[float]:
    return torch.linspace(low, high, count + 1, dtype=torch.float64).tolist()


def coherence_bins(comparison: Comparison) -> list[float]:
    """40 bins over the measured coherences and the random sets, 5% margin each side."""
    values = [u.coherence for u in comparison.units if u.coherence is not None] + comparison.baseline_values
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    margin = max(high - low, 1e-3) * 0.05
    return linear_bins(low - margin, high + margin, 40)
