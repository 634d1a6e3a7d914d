"""SAE files: rama/SAELens v6 folders (written and read), Gemma Scope `params.npz`, sparsify
folders and dictionary_learning `ae.pt` (read).

This module speaks file formats only, and knows no architecture: a reader returns `SAEFiles`, the
weights under SAELens's names and a cfg in SAELens's cfg.json vocabulary (other formats are
translated into it), and `rama.sae.base.SAE.load` asks the registered architectures which of them
reads that SAELens architecture. Every write goes to a staging folder renamed into place."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from rama.atomic import staged_folder
from rama.errors import RamaError


class SAEFormatError(RamaError, ValueError):
    """A file is missing, truncated, of another shape or of a format this reader does not know."""


@dataclass
class SAEFiles:
    """What a folder holds: `cfg` in SAELens v6's cfg.json vocabulary (rama's own block under
    "rama" when rama wrote it), weights `{name: tensor}` under SAELens's names."""

    cfg: dict[str, Any]
    weights: dict[str, torch.Tensor]
    source: Path


def write_saelens(
    path: str | os.PathLike[str],
    cfg: dict[str, Any],
    weights: dict[str, torch.Tensor],
    sparsity: torch.Tensor | None = None,
) -> None:
    """SAELens v6 layout: `cfg.json`, `sae_weights.safetensors`, optional `sparsity.safetensors`
    (each latent's log10 firing density). Files already in the folder (metrics …) are kept."""
    final = Path(path)
    with staged_folder(final, overwrite=True) as staging:
        (staging / "cfg.json").write_text(json.dumps(cfg, indent=2))
        save_file(weights, str(staging / "sae_weights.safetensors"))
        if sparsity is not None:
            save_file(
                {"sparsity": sparsity.detach().float().contiguous().cpu()},
                str(staging / "sparsity.safetensors"),
            )
        for existing in final.glob("*") if final.is_dir() else []:
            if not (staging / existing.name).exists():
                shutil.move(str(existing), staging / existing.name)  # keep metrics etc. beside the SAE


def read_sae_files(path: str | os.PathLike[str]) -> SAEFiles:
    """Detects the format from the files present."""
    where = Path(path)
    if not where.exists():
        raise SAEFormatError(f"no SAE at {str(where)!r}")
    readers: list[tuple[str, Callable[[Path], SAEFiles]]] = [
        ("sae_weights.safetensors", read_saelens),
        ("params.npz", read_gemma_scope),
        ("sae.safetensors", read_sparsify),
        ("ae.pt", read_dictionary_learning),
    ]
    folder = where.parent if where.is_file() else where
    for marker, reader in readers:
        if (folder / marker).exists():
            return reader(folder)
    raise SAEFormatError(
        f"{str(where)!r} holds no SAE this reader knows: expected sae_weights.safetensors + cfg.json "
        f"(rama/SAELens), params.npz (Gemma Scope), sae.safetensors + cfg.json (sparsify) or ae.pt (dictionary_learning)"
    )


def _safe_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises several types for truncated or corrupt files
        raise SAEFormatError(f"{str(path)!r} is truncated or corrupt ({error})") from error


def expect_shapes(weights: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], source: Path) -> None:
    """Every named weight present with its shape, or an SAEFormatError naming the first that is not."""
    for name, shape in shapes.items():
        if name not in weights:
            raise SAEFormatError(f"{str(source)!r} has no {name!r} (has: {', '.join(sorted(weights))})")
        if tuple(weights[name].shape) != shape:
            raise SAEFormatError(
                f"{str(source)!r}: {name} has shape {tuple(weights[name].shape)}, expected {shape}"
            )


def read_saelens(folder: Path) -> SAEFiles:
    cfg_path = folder / "cfg.json"
    if not cfg_path.exists():
        raise SAEFormatError(f"{str(folder)!r} has sae_weights.safetensors but no cfg.json")
    raw = json.loads(cfg_path.read_text())
    weights = _safe_load(folder / "sae_weights.safetensors")
    if "rama" not in raw:
        if raw.get("normalize_activations", "none") not in ("none", None):
            raise SAEFormatError(
                f"{str(folder)!r}: normalize_activations={raw['normalize_activations']!r} needs a scale that "
                f"the folder does not carry; fold it into the weights or save with normalize_activations='none'"
            )
        if raw.get("rescale_acts_by_decoder_norm"):
            raise SAEFormatError(f"{str(folder)!r}: rescale_acts_by_decoder_norm=True is not supported")
    return SAEFiles(raw, weights, folder)


def read_gemma_scope(folder: Path) -> SAEFiles:
    import numpy as np

    try:
        arrays = dict(np.load(folder / "params.npz"))
    except Exception as error:
        raise SAEFormatError(f"{str(folder / 'params.npz')!r} is truncated or corrupt ({error})") from error
    weights = {name: torch.from_numpy(np.asarray(value, dtype=np.float32)) for name, value in arrays.items()}
    if "W_enc" not in weights:
        raise SAEFormatError(f"{str(folder)!r}: params.npz has no W_enc (has {sorted(weights)})")
    d_in, d_sae = weights["W_enc"].shape
    cfg = {"d_in": d_in, "d_sae": d_sae, "architecture": "jumprelu", "apply_b_dec_to_input": False}
    return SAEFiles(cfg, weights, folder)


def read_sparsify(folder: Path) -> SAEFiles:
    raw = json.loads((folder / "cfg.json").read_text()) if (folder / "cfg.json").exists() else {}
    if raw.get("activation", "topk") != "topk":
        raise SAEFormatError(
            f"{str(folder)!r}: sparsify activation {raw['activation']!r} is not supported (topk is)"
        )
    tensors = _safe_load(folder / "sae.safetensors")
    expect_shapes(
        tensors, {"encoder.weight": tuple(tensors.get("encoder.weight", torch.empty(0, 0)).shape)}, folder
    )
    d_sae, d_in = tensors["encoder.weight"].shape  # sparsify: encoder.weight [M, D], W_dec [M, D]
    weights = {
        "W_enc": tensors["encoder.weight"].T,
        "b_enc": tensors["encoder.bias"],
        "W_dec": tensors["W_dec"],
        "b_dec": tensors["b_dec"],
    }
    if "W_skip" in tensors:
        weights["W_skip"] = tensors["W_skip"]
    d_out = int(tensors["W_dec"].shape[1])
    transcode = bool(raw.get("transcode", False))
    cfg = {
        "d_in": int(raw.get("d_in", d_in)),
        "d_sae": d_sae,
        "architecture": "topk",
        "k": int(raw.get("k", 32)),
        "d_out": d_out,
        "transcoder": transcode or d_out != d_in,
    }
    return SAEFiles(cfg, weights, folder)


# dictionary_learning class -> the SAELens architecture it is at inference
DICTIONARY_LEARNING = {
    "AutoEncoder": "standard",
    "AutoEncoderTopK": "topk",
    "BatchTopKSAE": "jumprelu",
    "JumpReluAutoEncoder": "jumprelu",
}


def read_dictionary_learning(folder: Path) -> SAEFiles:
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
    trainer = config.get("trainer", {})
    dict_class = trainer.get("dict_class", "AutoEncoder")
    if dict_class not in DICTIONARY_LEARNING:
        raise SAEFormatError(
            f"{str(folder)!r}: dict_class {dict_class!r} is not supported; known: {sorted(DICTIONARY_LEARNING)}"
        )
    try:
        state = torch.load(folder / "ae.pt", map_location="cpu", weights_only=True)
    except Exception as error:
        raise SAEFormatError(f"{str(folder / 'ae.pt')!r} is truncated or corrupt ({error})") from error
    weights = _dictionary_learning_weights(dict_class, state)
    d_in, d_sae = weights["W_enc"].shape
    cfg = {
        "d_in": d_in,
        "d_sae": d_sae,
        "architecture": DICTIONARY_LEARNING[dict_class],
        "k": int(trainer.get("k") or state.get("k", torch.tensor(0)).item() or 0) or None,
        "apply_b_dec_to_input": dict_class != "JumpReluAutoEncoder",
    }
    return SAEFiles(cfg, weights, folder)


def _dictionary_learning_weights(dict_class: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if dict_class == "JumpReluAutoEncoder":
        return {k: state[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}
    weights = {
        "W_enc": state["encoder.weight"].T,
        "b_enc": state["encoder.bias"],
        "W_dec": state["decoder.weight"].T,
    }
    weights["b_dec"] = state["bias"] if dict_class == "AutoEncoder" else state["b_dec"]
    if dict_class == "BatchTopKSAE":
        weights["threshold"] = state["threshold"].expand(weights["b_enc"].shape[0]).clone()
    return weights
