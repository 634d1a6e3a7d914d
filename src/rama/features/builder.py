"""`rama.features.build`: an SAE and a token source in, a finished feature store out.

The pass (`rama.features.analysis`) runs before the store's staging file is opened; the store is
renamed into place only once every table is written (`rama.features.store.creating`).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from rama import __version__
from rama.distributed import gather_object, setup_distributed
from rama.errors import ConfigError
from rama.features.analysis import BuildConfig, FeatureAnalysis, Tokens, analyse
from rama.features.logit_effects import LogitEffects, model_logit_effects
from rama.features.neighbours import MAX_COFIRING_UNITS, nearest_by_cosine
from rama.features.store import check_target, creating, sae_fingerprint, write_meta
from rama.features.summaries import Example, UnitStats, moved, quantile_examples, top_examples
from rama.hooks import HookedModel, load
from rama.sae.base import SAE


def build(
    sae: SAE | str | Path,
    model: HookedModel | str | None = None,
    tokens: Tokens | None = None,
    corpus: str | Path | None = None,
    out: str | Path = "features.db",
    config: BuildConfig | None = None,
    replace: bool = False,
) -> Path:
    """Analyse `sae` (an SAE or a folder rama reads) over `tokens` (a count from `corpus`, default
    `config.tokens` from the built-in corpus, or given `[rows, pos]` token rows) with `model`
    (default: the model the SAE names) and write the feature store `out`. Under torchrun each rank
    analyses its stride of the token batches and rank 0 merges them and writes the same store one
    process would (a token count or a `[rows, pos]` tensor; an iterable of batches is refused)."""
    config = config or BuildConfig()
    check_target(out, replace)  # before the pass, not after it
    sae_path = None if isinstance(sae, SAE) else str(Path(sae).resolve())
    sae = sae if isinstance(sae, SAE) else SAE.load(sae)
    if model is None and not sae.cfg.model_name:
        raise ConfigError("the SAE names no model; pass model= (--model)")
    model = model if isinstance(model, HookedModel) else load(model or sae.cfg.model_name)
    check_fit(sae, model)
    sae = sae.to(model.device).eval()
    current = setup_distributed(str(model.device))  # torchrun's process group; nothing in one process
    analysis = merged_on_main(
        analyse(sae, model, tokens, corpus, config, rank=current.rank, world_size=current.size)
    )
    if analysis is None:  # another rank's: rank 0 writes the store
        return Path(out)
    source = (
        "given tokens" if tokens is not None and not isinstance(tokens, int) else str(corpus or "built-in")
    )
    write_store(out, analysis, model, config, source, replace, sae_path)
    return Path(out)


def merged_on_main(analysis: FeatureAnalysis) -> FeatureAnalysis | None:
    """Under torchrun, rank 0's analysis with every other rank's stride merged in (the one-pass
    result, whatever the number of ranks); None on the other ranks. One process: `analysis`."""
    parts = gather_object(analysis.summaries(), what="the feature analyses")
    if parts is None:
        return None
    for other in parts[1:]:
        analysis.absorb(other)
    return analysis


def check_fit(sae: SAE, model: HookedModel) -> None:
    """A ConfigError unless the SAE's sites are sites of `model` of the SAE's widths."""
    pairs = [(sae.cfg.hook_name, sae.cfg.d_in)]
    if sae.cfg.hook_name_out:
        pairs.append((sae.cfg.hook_name_out, sae.cfg.output_dim))
    for site, width in pairs:
        if site not in model.sites:
            raise ConfigError(f"the SAE's site {site!r} is not a site of {model.cfg.name or 'this model'}")
        found = model.site_shape(site)[-1]
        if found != width:
            raise ConfigError(f"the SAE expects width {width} at {site}, the model has {found}")
    if sae.cfg.output_dim != model.cfg.d_model:
        raise ConfigError(
            f"the decoder writes width {sae.cfg.output_dim}, not the residual's {model.cfg.d_model}"
        )


def write_store(
    out: str | Path,
    analysis: FeatureAnalysis,
    model: HookedModel,
    config: BuildConfig,
    source: str,
    replace: bool,
    sae_path: str | None = None,
) -> None:
    """Every table of the store from a finished analysis; `sae_path`, the SAE's folder when it was
    loaded from one, is recorded so `rama serve` can find the SAE again."""
    sae = analysis.sae
    latents = moved(analysis.latents, "cpu")
    neurons = None if analysis.neurons is None else moved(analysis.neurons, "cpu")
    with creating(out, replace) as connection:
        write_meta(connection, {**store_meta(analysis, model, config, source), "sae_path": sae_path})
        decode = TokenText(model.tokenizer)
        for kind, stats in (("latent", latents), ("neuron", neurons)):
            if stats is not None:
                write_units(connection, kind, stats, config, decode)
        with torch.no_grad():
            effects = model_logit_effects(model, sae.W_dec, n=config.logit_tokens)
        write_logits(connection, effects, decode)
        cosine = nearest_by_cosine(sae.W_dec, n=config.neighbours)
        write_neighbours(connection, "cosine", *cosine)
        if analysis.cofiring is not None:
            write_neighbours(connection, "cofiring", *analysis.cofiring.top(config.neighbours))


def store_meta(
    analysis: FeatureAnalysis, model: HookedModel, config: BuildConfig, source: str
) -> dict[str, Any]:
    sae = analysis.sae
    cofiring = (
        "jaccard of firing sets over the analysed tokens"
        if analysis.cofiring is not None
        else f"left out: {sae.cfg.d_sae} latents > {MAX_COFIRING_UNITS}"
    )
    return {
        "sae_fingerprint": sae_fingerprint(sae),
        "sae_architecture": sae.cfg.architecture,
        "d_sae": sae.cfg.d_sae,
        "model_name": model.cfg.name or sae.cfg.model_name,
        "site": sae.cfg.hook_name,
        "site_out": sae.cfg.hook_name_out or sae.cfg.hook_name,
        "neuron_site": analysis.neuron_site,
        "n_neurons": None if analysis.neurons is None else analysis.neurons.n_units,
        "tokens": analysis.latents.tokens,
        "context_size": analysis.latents.context_size,
        "corpus": source,
        "histogram_edges": analysis.latents.edges.tolist(),
        "config": dataclasses.asdict(config),
        "cofiring": cofiring,
        "rama_version": __version__,
    }


class TokenText:
    """Token ids to display strings, each id decoded once."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.known: dict[int, str] = {}

    def __call__(self, ids: list[int]) -> list[str]:
        new = sorted({i for i in ids if i not in self.known})
        if new:
            decode = getattr(self.tokenizer, "batch_decode", None)
            texts = decode([[i] for i in new]) if decode else [f"<{i}>" for i in new]
            self.known.update(zip(new, texts, strict=True))
        return [self.known[i] for i in ids]


def write_units(
    connection: sqlite3.Connection, kind: str, stats: UnitStats, config: BuildConfig, decode: TokenText
) -> None:
    """The `units` rows and the `examples` rows of one kind of unit."""
    density, mean = stats.density.tolist(), stats.mean.tolist()
    maximum, count, hist = stats.max.tolist(), stats.count.tolist(), stats.hist.tolist()
    connection.executemany(
        "INSERT INTO units (kind, id, density, mean, max, count, histogram) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (kind, u, density[u], mean[u], maximum[u], count[u], json.dumps(hist[u]))
            for u in range(stats.n_units)
        ],
    )
    connection.executemany(
        "INSERT INTO examples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        example_rows(kind, stats, config, decode),
    )


def example_rows(
    kind: str, stats: UnitStats, config: BuildConfig, decode: TokenText
) -> Iterator[tuple[Any, ...]]:
    for unit in range(stats.n_units):
        found: list[tuple[str, Example]] = [("top", e) for e in top_examples(stats, unit)]
        found += [
            ("quantile", e) for e in quantile_examples(stats, unit, config.quantiles, config.per_quantile)
        ]
        for sample, e in found:
            yield (kind, unit, sample, e.bin, e.rank, e.activation, e.token_index, e.focus,
                   json.dumps(e.tokens), json.dumps(decode(e.tokens)), json.dumps(e.acts))  # fmt: skip


def write_logits(connection: sqlite3.Connection, effects: dict[str, LogitEffects], decode: TokenText) -> None:
    rows = []
    for via, effect in effects.items():
        for direction, ids, values in (
            ("promoted", effect.promoted_ids, effect.promoted),
            ("suppressed", effect.suppressed_ids, effect.suppressed),
        ):
            for unit, (unit_ids, unit_values) in enumerate(zip(ids.tolist(), values.tolist(), strict=True)):
                texts = decode(unit_ids)
                rows += [(unit, via, direction, rank, token, texts[rank], value)
                         for rank, (token, value) in enumerate(zip(unit_ids, unit_values, strict=True))]  # fmt: skip
    connection.executemany("INSERT INTO logits VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


def write_neighbours(
    connection: sqlite3.Connection, measure: str, values: torch.Tensor, ids: torch.Tensor
) -> None:
    rows = [
        (unit, measure, rank, other, value)
        for unit, (row_values, row_ids) in enumerate(zip(values.tolist(), ids.tolist(), strict=True))
        for rank, (value, other) in enumerate(zip(row_values, row_ids, strict=True))
    ]
    connection.executemany("INSERT INTO neighbours VALUES (?, ?, ?, ?, ?)", rows)
