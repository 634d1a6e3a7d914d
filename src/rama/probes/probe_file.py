"""A probe as a portable folder: `probe.safetensors` (direction, mean, scale, latents) and `probe.json`
(model name and weights fingerprint, site and its width, token selection, reduction, normalisation,
alarm threshold and the false-positive rate it was calibrated for, training data summary, metrics).

Applying a probe to another model (another fingerprint) or to a site of another width is refused with a
`ProbeMismatchError` that names both sides.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from rama.atomic import staged_folder
from rama.errors import InputError, RamaError
from rama.hooks.model import HookedModel
from rama.models.fingerprint import weights_fingerprint
from rama.probes.gather import TOKEN_SELECTIONS
from rama.probes.kinds import KINDS, LinearProbe
from rama.probes.training import TrainedProbe

FORMAT = 1
WEIGHTS, METADATA = "probe.safetensors", "probe.json"


class ProbeMismatchError(RamaError, ValueError):
    """A probe applied to a model or site it was not trained on."""


def normalisation(probe: LinearProbe) -> str:
    return "standardise: (x - mean) / std of the training rows" if probe.kind in ("logistic", "ksparse") else \
        "centre: x - mean of the training rows"  # fmt: skip


def save_probe(trained: TrainedProbe, out: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write the probe folder in one rename (an existing non-empty folder is refused unless `overwrite`)."""
    probe = trained.probe
    tensors = {"direction": probe.direction, "mean": probe.mean, "scale": probe.scale}
    if probe.latents is not None:
        tensors["latents"] = probe.latents.long()
    record = {
        "format": FORMAT, "kind": probe.kind, "site": trained.site, "token": trained.token,
        "normalisation": normalisation(probe), "bias": probe.bias, "threshold": trained.threshold,
        "threshold_fpr": trained.fpr, "alarm": "1 - p, p = P(label 1: true / honest)", **trained.meta,
    }  # fmt: skip
    with staged_folder(out, overwrite=overwrite) as staging:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(staging / WEIGHTS))
        (staging / METADATA).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return Path(out)


def load_probe(path: str | os.PathLike[str]) -> TrainedProbe:
    """A probe folder written by `save_probe` (or its probe.json path), checked field by field."""
    folder = Path(path).parent if Path(path).name == METADATA else Path(path)
    if not (folder / METADATA).is_file() or not (folder / WEIGHTS).is_file():
        raise InputError(f"{str(folder)!r} is not a probe folder: it needs {METADATA} and {WEIGHTS}")
    try:
        record: dict[str, Any] = json.loads((folder / METADATA).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / WEIGHTS))
    except (json.JSONDecodeError, OSError, RuntimeError) as error:
        raise InputError(f"probe folder {str(folder)!r} is unreadable: {error}") from error
    check_record(record, folder)
    probe = LinearProbe(record["kind"], tensors["direction"], float(record["bias"]), tensors["mean"],
                        tensors["scale"], tensors.get("latents"), dict(record.get("fit", {})))  # fmt: skip
    meta = {
        k: v
        for k, v in record.items()
        if k not in ("kind", "site", "token", "bias", "threshold", "threshold_fpr")
    }
    return TrainedProbe(probe, record["site"], record["token"], float(record["threshold"]),
                        float(record["threshold_fpr"]), meta)  # fmt: skip


def check_record(record: dict[str, Any], folder: Path) -> None:
    missing = [k for k in ("format", "kind", "site", "token", "bias", "threshold", "threshold_fpr", "model",
                           "fingerprint", "width") if k not in record]  # fmt: skip
    if missing:
        raise InputError(
            f"{folder / METADATA} lacks {', '.join(missing)}; it was not written by rama probe train"
        )
    if record["format"] != FORMAT:
        raise InputError(
            f"{folder / METADATA} has format {record['format']}; this rama reads format {FORMAT}"
        )
    if record["kind"] not in KINDS or record["token"] not in TOKEN_SELECTIONS:
        raise InputError(f"{folder / METADATA}: unknown kind {record['kind']!r} or token {record['token']!r}")
    threshold = record["threshold"]
    if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise InputError(
            f"{folder / METADATA}: threshold {threshold!r} is outside [0, 1]; a probability probe's alarm "
            f"threshold must be in it (retrain, or set it to a value in [0, 1])"
        )
    if not 0 < record["threshold_fpr"] < 1:
        raise InputError(f"{folder / METADATA}: threshold_fpr {record['threshold_fpr']} must lie in (0, 1)")


def check_probe_fits(trained: TrainedProbe, model: HookedModel, fingerprint: str | None = None) -> None:
    """Refuse a model whose weights differ from the training model's, or whose site has another width."""
    expected = trained.meta["fingerprint"]
    actual = fingerprint or weights_fingerprint(model.hf)
    if actual != expected:
        raise ProbeMismatchError(
            f"this probe was trained on {trained.meta['model']!r} (weights fingerprint {expected}); the model "
            f"given ({model.cfg.name!r}) has fingerprint {actual}: load the model it was trained on"
        )
    if trained.site not in model.sites:
        raise ProbeMismatchError(
            f"this probe reads site {trained.site!r}, which {model.cfg.name!r} does not have"
        )
    width = model.site_shape(trained.site)[-1]
    if width != trained.meta["width"]:
        raise ProbeMismatchError(
            f"this probe reads {trained.meta['width']}-wide activations at {trained.site}; "
            f"that site of {model.cfg.name!r} is {width} wide"
        )
