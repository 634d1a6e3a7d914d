"""The scaling question measured: a grid of TopK SAEs from one activation cache, Gao et al. (2024)'s
functional forms fitted to it, and the cheapest (width, k, tokens) predicted to reach a target FVU.

Forms (natural logs; L is the held-out FVU):
- joint, at the largest token budget: L(n, k) = exp(α + β_k log k + β_n log n + γ log k log n) + exp(ζ + η log k)
- latents, per k: L(n) = exp(a + b log n) + exp(c) (a power law with an irreducible term)
- compute, per k: L(C) = exp(a + b log C) over the compute frontier (no point cheaper and better),
  with C ≈ 6 · d_in · n · tokens FLOPs (encoder and decoder, forward and backward, dense).
Each form is fitted by least squares on log L; a form with no more points than parameters is not fitted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from rama.atomic import write_text
from rama.errors import ConfigError
from rama.hooks.model import HookedModel

RESULTS = "results.jsonl"
# Gao et al. 2024, "Scaling and evaluating sparse autoencoders" (arXiv:2406.04093), section 3.1 / figure 1,
# joint fit on GPT-4 activations (FVU-normalised MSE).
GAO_JOINT = {"alpha": -0.50, "beta_k": 0.26, "beta_n": -0.017, "gamma": -0.042, "zeta": -1.32, "eta": -0.085}


class TooFewPointsError(ConfigError):
    """A functional form has no more grid points than parameters, so a fit would mean nothing."""


class UnreachableTargetError(ConfigError):
    """No (width, k) within reach of the grid is predicted to reach the target FVU."""


def ints_help(help: str) -> dict[str, Any]:
    """Metadata of a list option the CLI takes as one comma-separated value (`rama.cli.options`)."""
    return {"help": help, "comma": True}


@dataclass(frozen=True)
class ScalingConfig:
    """A grid and what to fit; doubles as `rama sae scaling`'s options (one field, one flag)."""

    widths: list[int] = field(
        default_factory=lambda: [1152, 2304, 4608], metadata=ints_help("latents per SAE (comma-separated)")
    )
    ks: list[int] = field(
        default_factory=lambda: [16, 32, 64], metadata=ints_help("TopK k values (comma-separated)")
    )
    tokens: list[int] = field(
        default_factory=lambda: [400_000], metadata=ints_help("training-token budgets (comma-separated)")
    )
    budget_ks: list[int] = field(
        default_factory=lambda: [],
        metadata=ints_help("ks at which budgets below the largest are trained (default: the middle k)"),
    )
    model: str = field(default="smollm2-135m", metadata={"help": "built-in name, local HF folder or hub id"})
    site: str = field(default="blocks.9.hook_resid_post", metadata={"help": "the site every SAE reads"})
    cache: str = field(
        default="rama-scaling/cache", metadata={"help": "activation-cache folder (one harvest)"}
    )
    harvest_tokens: int | None = field(
        default=None, metadata={"help": "tokens cached (default: the largest budget)"}
    )
    out: str = field(default="rama-scaling", metadata={"help": "folder of the grid's SAEs and results.jsonl"})
    target_fvu: float = field(default=0.1, metadata={"help": "the FVU to recommend a (width, k, tokens) for"})
    seed: int = field(default=0, metadata={"help": "seed of the harvest and every SAE"})
    context_size: int = field(default=128, metadata={"help": "tokens per harvested sequence"})
    batch_size: int = field(default=4096, metadata={"help": "activations per training step"})
    eval_tokens: int = field(default=8192, metadata={"help": "held-out tokens per grid point"})
    corpus: str | None = field(default=None, metadata={"help": "corpus file/folder (default: built-in)"})
    device: str = field(default="cpu", metadata={"help": "where the SAEs train"})
    figure: str | None = field(default=None, metadata={"help": "PNG of the fits (default: OUT/scaling.png)"})

    def __post_init__(self) -> None:
        for name in ("widths", "ks", "tokens"):
            values = getattr(self, name)
            if not values or any(not isinstance(v, int) or v < 1 for v in values):
                raise ConfigError(f"{name} must be a non-empty list of positive integers; got {values}")
        if max(self.ks) > min(self.widths):
            raise ConfigError(
                f"every k must be at most every width; k {max(self.ks)} > width {min(self.widths)}"
            )
        if not set(self.budget_ks) <= set(self.ks):
            raise ConfigError(f"budget_ks {self.budget_ks} must be among ks {self.ks}")
        if not 0 < self.target_fvu < 1:
            raise ConfigError(f"target_fvu must be between 0 and 1 (exclusive); got {self.target_fvu}")
        if min(self.tokens) < self.batch_size:
            raise ConfigError(f"every token budget must be at least one batch ({self.batch_size:,})")
        if self.harvest_tokens is not None and self.harvest_tokens < self.batch_size:
            raise ConfigError(f"harvest_tokens must be at least one batch ({self.batch_size:,})")

    def points(self) -> list[tuple[int, int, int]]:
        """(width, k, tokens) to train: widths × ks at the largest budget, and every budget at budget_ks."""
        top = max(self.tokens)
        budget_ks = self.budget_ks or [sorted(self.ks)[len(self.ks) // 2]]
        grid = {(n, k, top) for n in self.widths for k in self.ks}
        grid |= {(n, k, t) for n in self.widths for k in budget_ks for t in self.tokens}
        return sorted(grid)


def point_name(width: int, k: int, tokens: int) -> str:
    return f"n{width}-k{k}-t{tokens}"


def read_results(path: Path) -> list[dict[str, Any]]:
    """The records of finished points (the file is rewritten whole, so every line is complete)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_grid(model: HookedModel, config: ScalingConfig, progress: bool = True) -> list[dict[str, Any]]:
    """Train every grid point not yet in `OUT/results.jsonl` from one activation cache, appending each
    record as it finishes (the file is replaced atomically), so a killed run resumes where it stopped."""
    from rama.activations import HarvestConfig
    from rama.sae.runner import Job, train_many
    from rama.sae.training import TrainConfig

    out = Path(config.out)
    results_path = out / RESULTS
    records = read_results(results_path)
    done = {(r["width"], r["k"], r["tokens"]) for r in records}
    todo = [p for p in config.points() if p not in done]
    site = model.resolve(config.site)[0]
    d_in = int(model.site_shape(site)[-1])
    cached = config.harvest_tokens or max(config.tokens)
    harvest = HarvestConfig(
        tokens=cached, seed=config.seed, context_size=config.context_size, progress=progress
    )
    for width, k, tokens in tqdm(todo, desc="scaling grid", unit="SAE", disable=not progress):
        folder = out / point_name(width, k, tokens)
        if (folder / "metrics.json").exists():  # trained and evaluated, killed before its record
            metrics = json.loads((folder / "metrics.json").read_text())
        else:
            train = TrainConfig.create(architecture="topk", d_sae=width, k=k, total_tokens=tokens, seed=config.seed,
                                       batch_size=config.batch_size, device=config.device, progress=False)  # fmt: skip
            [(_, metrics)] = train_many(model, [Job(site, folder, train)], harvest_config=harvest,
                                        activation_cache=config.cache, corpus=config.corpus,
                                        eval_tokens=config.eval_tokens)  # fmt: skip
        records.append(point_record(width, k, tokens, d_in, metrics))
        write_text(results_path, "".join(json.dumps(r) + "\n" for r in records))
    return records


def point_record(width: int, k: int, tokens: int, d_in: int, metrics: dict[str, Any]) -> dict[str, Any]:
    kept = ("fvu", "mse", "l0", "dead_fraction", "ce_loss_recovered", "train_seconds")
    return {"width": width, "k": k, "tokens": tokens, "d_in": d_in, "compute": 6.0 * d_in * width * tokens,
            **{key: metrics.get(key) for key in kept}}  # fmt: skip


@dataclass
class Fit:
    """One fitted form: its parameters, fit quality on log FVU, and the points it saw."""

    form: str
    params: dict[str, float]
    rmse_log: float  # root-mean-square residual of log FVU
    r2_log: float
    points: int


@dataclass
class ScalingFits:
    joint: Fit | None
    latents: dict[int, Fit]  # per k
    compute: dict[int, Fit]  # per k
    skipped: list[str]  # forms not fitted, and why


def joint_form(p: Sequence[float], n: np.ndarray, k: np.ndarray) -> np.ndarray:
    alpha, beta_k, beta_n, gamma, zeta, eta = p
    lk, ln = np.log(k), np.log(n)
    return np.asarray(np.exp(alpha + beta_k * lk + beta_n * ln + gamma * lk * ln) + np.exp(zeta + eta * lk))


def latents_form(p: Sequence[float], n: np.ndarray) -> np.ndarray:
    return np.asarray(np.exp(p[0] + p[1] * np.log(n)) + np.exp(p[2]))


def power_form(p: Sequence[float], c: np.ndarray) -> np.ndarray:
    return np.asarray(np.exp(p[0] + p[1] * np.log(c)))


def fit_form(
    form: str, names: list[str], model: Callable[..., np.ndarray], inputs: tuple[np.ndarray, ...],
    fvu: np.ndarray, starts: list[list[float]],
) -> Fit:  # fmt: skip
    """Least squares on log FVU from several starting points; the best fit wins."""
    from scipy.optimize import least_squares  # here: `rama --help` need not import scipy

    if len(fvu) <= len(names):
        raise TooFewPointsError(
            f"the {form} form has {len(names)} parameters and needs more points than that; got {len(fvu)}"
        )
    y = np.log(fvu)

    def residual(p: np.ndarray) -> np.ndarray:
        return np.log(np.clip(model(p, *inputs), 1e-300, None)) - y

    best = min(
        (least_squares(residual, np.asarray(s, float), method="lm") for s in starts), key=lambda r: r.cost
    )
    res = residual(best.x)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float((res**2).sum()) / total if total > 0 else math.nan
    return Fit(
        form, dict(zip(names, map(float, best.x), strict=True)), float(np.sqrt((res**2).mean())), r2, len(y)
    )


def fit_scaling_laws(records: list[dict[str, Any]]) -> ScalingFits:
    """Every form the points allow (pure: no training); a ConfigError when none can be fitted."""
    if not records:
        raise TooFewPointsError("no grid points to fit; run the grid first")
    top = max(r["tokens"] for r in records)
    final = [r for r in records if r["tokens"] == top]
    n, k, fvu = (np.array([r[key] for r in final], float) for key in ("width", "k", "fvu"))
    fits, skipped = ScalingFits(None, {}, {}, []), []
    try:
        floor = math.log(fvu.min()) - 1.0
        starts = [
            [0.0, 0.0, -0.1, 0.0, floor, 0.0],
            list(GAO_JOINT.values()),
            [1.0, -0.3, -0.2, 0.0, floor - 2, 0.0],
        ]
        fits.joint = fit_form("joint", list(GAO_JOINT), joint_form, (n, k), fvu, starts)
    except TooFewPointsError as error:
        skipped.append(str(error))
    for kk in sorted(set(k.tolist())):
        mask = k == kk
        try:
            floor = math.log(fvu[mask].min()) - 1.0
            fits.latents[int(kk)] = fit_form(f"latents (k={int(kk)})", ["a", "b", "c"], latents_form, (n[mask],),
                                              fvu[mask], [[0.0, -0.3, floor], [1.0, -0.5, floor - 2]])  # fmt: skip
        except TooFewPointsError as error:
            skipped.append(str(error))
        frontier = compute_frontier([r for r in records if r["k"] == kk])
        c, y = (
            np.array([r["compute"] for r in frontier], float),
            np.array([r["fvu"] for r in frontier], float),
        )
        try:
            fits.compute[int(kk)] = fit_form(f"compute (k={int(kk)})", ["a", "b"], power_form, (c,), y,
                                              [[0.0, -0.1]])  # fmt: skip
        except TooFewPointsError as error:
            skipped.append(str(error))
    fits.skipped = skipped
    if fits.joint is None and not fits.latents and not fits.compute:
        raise TooFewPointsError("too few grid points for any form: " + "; ".join(skipped))
    return fits


def compute_frontier(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points no other point beats on both compute and FVU, cheapest first."""
    frontier: list[dict[str, Any]] = []
    for record in sorted(records, key=lambda r: (r["compute"], r["fvu"])):
        if not frontier or record["fvu"] < frontier[-1]["fvu"]:
            frontier.append(record)
    return frontier


@dataclass
class Recommendation:
    width: int
    k: int
    tokens: int
    predicted_fvu: float
    compute: float
    caveats: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recommend(
    fits: ScalingFits, records: list[dict[str, Any]], target_fvu: float, max_scale: int = 64
) -> Recommendation:
    """The cheapest (width, k, tokens) whose jointly fitted FVU ≤ target: least compute (width × tokens),
    then the smallest k; widths are the grid's and its doublings up to `max_scale` × the widest, ks the grid's."""
    if not 0 < target_fvu < 1:
        raise ConfigError(f"target_fvu must be between 0 and 1 (exclusive); got {target_fvu}")
    if fits.joint is None:
        raise TooFewPointsError("recommending needs the joint L(n, k) fit: " + "; ".join(fits.skipped))
    widths = sorted({r["width"] for r in records})
    ks = sorted({r["k"] for r in records})
    tokens = max(r["tokens"] for r in records)
    d_in = records[0]["d_in"]
    candidates = sorted({*widths, *(widths[-1] * 2**i for i in range(1, int(math.log2(max_scale)) + 1))})
    params = list(fits.joint.params.values())
    for width in candidates:
        for k in (k for k in ks if k <= width):
            predicted = float(joint_form(params, np.array([width]), np.array([k]))[0])
            if predicted <= target_fvu:
                caveats = extrapolation_caveats(width, widths, target_fvu, records)
                return Recommendation(width, k, tokens, predicted, 6.0 * d_in * width * tokens, caveats)
    raise UnreachableTargetError(
        f"no width up to {candidates[-1]:,} and k in {ks} is predicted to reach FVU {target_fvu}; "
        "raise target_fvu or add larger ks to the grid"
    )


def scaling_report(fits: ScalingFits, records: list[dict[str, Any]], target_fvu: float) -> dict[str, Any]:
    """The fits and the recommendation as JSON; a target no candidate reaches is reported, not raised,
    so that a finished grid still gives its fits and figure."""
    report: dict[str, Any] = {
        "joint": None if fits.joint is None else asdict(fits.joint),
        "latents": {k: asdict(f) for k, f in fits.latents.items()},
        "compute": {k: asdict(f) for k, f in fits.compute.items()},
        "skipped": fits.skipped,
    }
    if fits.joint is not None:
        try:
            report["recommendation"] = recommend(fits, records, target_fvu).to_dict()
        except UnreachableTargetError as unreachable:
            report["recommendation"] = {"unreachable": str(unreachable)}
    return report


def extrapolation_caveats(
    width: int, widths: list[int], target: float, records: list[dict[str, Any]]
) -> list[str]:
    caveats = []
    if width > widths[-1]:
        caveats.append(f"width {width:,} is beyond the grid (widest {widths[-1]:,}): the fit is extrapolated, "
                       "and wider SAEs usually need more tokens to converge")  # fmt: skip
    best = min(r["fvu"] for r in records)
    if target < best:
        caveats.append(f"target FVU {target} is below the best measured ({best:.4f})")
    return caveats


def plot_scaling(records: list[dict[str, Any]], fits: ScalingFits, path: str | Path) -> Path:
    """Left: FVU against width per k at the largest budget, with the joint fit's curves. Right: FVU
    against compute, every point, with each k's frontier fit."""
    from rama.plotting import pyplot, save_figure

    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    top = max(r["tokens"] for r in records)
    ks = sorted({r["k"] for r in records})
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.85, len(ks)))
    for colour, k in zip(colours, ks, strict=True):
        final = sorted((r for r in records if r["k"] == k and r["tokens"] == top), key=lambda r: r["width"])
        left.scatter([r["width"] for r in final], [r["fvu"] for r in final], color=colour, label=f"k={k}")
        if fits.joint is not None and final:
            n = np.geomspace(final[0]["width"] / 1.5, final[-1]["width"] * 1.5, 50)
            left.plot(n, joint_form(list(fits.joint.params.values()), n, np.full_like(n, k)), color=colour)
        every = [r for r in records if r["k"] == k]
        right.scatter([r["compute"] for r in every], [r["fvu"] for r in every], color=colour, label=f"k={k}")
        if k in fits.compute:
            c = np.geomspace(
                min(r["compute"] for r in every) / 1.5, max(r["compute"] for r in every) * 1.5, 50
            )
            right.plot(c, power_form(list(fits.compute[k].params.values()), c), color=colour, linestyle="--")
    left.set(xscale="log", yscale="log", xlabel="latents n", ylabel="held-out FVU",
             title=f"FVU vs width ({top:,} tokens; lines: joint fit)")  # fmt: skip
    right.set(xscale="log", yscale="log", xlabel="training compute C (≈ 6·d_in·n·tokens FLOPs)",
              ylabel="held-out FVU", title="FVU vs compute (dashed: frontier fit)")  # fmt: skip
    right.xaxis.set_minor_formatter(plt.NullFormatter())  # minor labels collide across a decade
    for axis in (left, right):
        axis.legend(fontsize=8)
        axis.grid(True, which="both", alpha=0.3)
    return save_figure(figure, path)
