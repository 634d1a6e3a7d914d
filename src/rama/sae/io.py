"""SAE files: rama/SAELens v6 folders (written and read), Gemma Scope `params.npz`, sparsify
folders and dictionary_learning `ae.pt` (read). Every read checks shapes before building anything;
every write goes to a temporary folder that is renamed into place."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from rama import __version__
from rama.sae.base import SAE, SAEConfig

# rama architecture -> SAELens v6 name (BatchTopK, Matryoshka included, is saved as the JumpReLU
# it is at inference)
SAELENS_NAMES = {
    "standard": "standard",
    "topk": "topk",
    "jumprelu": "jumprelu",
    "gated": "gated",
    "batchtopk": "jumprelu",
    "matryoshka": "jumprelu",
}


class SAEFormatError(ValueError):
    pass


def _saelens_weights(sae: SAE) -> dict[str, torch.Tensor]:
    weights: dict[str, Any] = {"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    if sae.cfg.architecture == "gated":
        weights |= {"b_gate": sae.b_gate, "b_mag": sae.b_mag, "r_mag": sae.r_mag}
    else:
        weights["b_enc"] = sae.b_enc
    threshold = sae.threshold_for_export()
    if threshold is not None:
        weights["threshold"] = threshold
    if sae.W_skip is not None:
        weights["W_skip"] = sae.W_skip
    return {name: t.detach().contiguous().cpu() for name, t in weights.items()}


def saelens_cfg(sae: SAE) -> dict[str, Any]:
    c = sae.cfg
    cfg: dict[str, Any] = {
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": c.dtype,
        "device": "cpu",
        "architecture": SAELENS_NAMES[c.architecture],
        "apply_b_dec_to_input": sae.subtracts_b_dec,
        "normalize_activations": "none",  # rama folds its training scale into the weights
        "reshape_activations": "none",
        "metadata": {
            "model_name": c.model_name,
            "hook_name": c.hook_name,
            "hook_head_index": None,
            "context_size": c.context_size,
            "prepend_bos": c.prepend_bos,
            "exclude_special_tokens": c.exclude_special_tokens,
            # the cfg.json layout version SAELens keys its parsing on (v6), not a claim to be SAELens
            "sae_lens_version": "6.0.0",
            "sae_lens_training_version": None,
            "rama_version": __version__,
        },
        "rama": c.to_dict(),
    }
    if c.architecture == "topk":
        cfg |= {"k": c.k, "rescale_acts_by_decoder_norm": False}
    if c.is_transcoder:
        cfg |= {"d_out": c.output_dim, "hook_name_out": c.hook_name_out}
    return cfg


def save_sae(sae: SAE, path: str | os.PathLike[str], sparsity: torch.Tensor | None = None) -> None:
    """SAELens v6 layout: `cfg.json`, `sae_weights.safetensors`, optional `sparsity.safetensors`."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        (staging / "cfg.json").write_text(json.dumps(saelens_cfg(sae), indent=2))
        save_file(_saelens_weights(sae), str(staging / "sae_weights.safetensors"))
        if sparsity is not None:
            save_file(
                {"sparsity": sparsity.detach().float().contiguous().cpu()},
                str(staging / "sparsity.safetensors"),
            )
        for existing in final.glob("*") if final.is_dir() else []:
            if not (staging / existing.name).exists():
                shutil.move(str(existing), staging / existing.name)  # keep metrics etc. beside the SAE
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_sae(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> SAE:
    """Detects the format from the files present."""
    where = Path(path)
    if not where.exists():
        raise SAEFormatError(f"no SAE at {str(where)!r}")
    readers: list[tuple[str, Callable[[Path], SAE]]] = [
        ("sae_weights.safetensors", read_saelens),
        ("params.npz", read_gemma_scope),
        ("sae.safetensors", read_sparsify),
        ("ae.pt", read_dictionary_learning),
    ]
    folder = where.parent if where.is_file() else where
    for marker, reader in readers:
        if (folder / marker).exists():
            return reader(folder).to(device).eval()
    raise SAEFormatError(
        f"{str(where)!r} holds no SAE this reader knows: expected sae_weights.safetensors + cfg.json "
        f"(rama/SAELens), params.npz (Gemma Scope), sae.safetensors + cfg.json (sparsify) or ae.pt (dictionary_learning)"
    )


def _safe_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises several types for truncated or corrupt files
        raise SAEFormatError(f"{str(path)!r} is truncated or corrupt ({error})") from error


def _expect(weights: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], source: Path) -> None:
    for name, shape in shapes.items():
        if name not in weights:
            raise SAEFormatError(f"{str(source)!r} has no {name!r} (has: {', '.join(sorted(weights))})")
        if tuple(weights[name].shape) != shape:
            raise SAEFormatError(
                f"{str(source)!r}: {name} has shape {tuple(weights[name].shape)}, expected {shape}"
            )


def build_from_weights(cfg: SAEConfig, weights: dict[str, torch.Tensor], source: Path) -> SAE:
    d_in, d_sae, d_out = cfg.d_in, cfg.d_sae, cfg.output_dim
    shapes: dict[str, tuple[int, ...]] = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_out), "b_dec": (d_out,)}
    if cfg.architecture == "gated":
        shapes |= {"b_gate": (d_sae,), "b_mag": (d_sae,), "r_mag": (d_sae,)}
    else:
        shapes["b_enc"] = (d_sae,)
    if cfg.architecture == "jumprelu":
        shapes["threshold"] = (d_sae,)
    if cfg.skip_connection:
        shapes["W_skip"] = (d_out, d_in)
    _expect(weights, shapes, source)
    sae = SAE.create(cfg)
    with torch.no_grad():
        for name in shapes:
            if name == "threshold":
                log_threshold: Any = sae.log_threshold
                log_threshold.copy_(weights[name].float().clamp_min(1e-30).log())
            else:
                getattr(sae, name).copy_(weights[name].float())
    return sae


def read_saelens(folder: Path) -> SAE:
    cfg_path = folder / "cfg.json"
    if not cfg_path.exists():
        raise SAEFormatError(f"{str(folder)!r} has sae_weights.safetensors but no cfg.json")
    raw = json.loads(cfg_path.read_text())
    weights = _safe_load(folder / "sae_weights.safetensors")
    if "rama" in raw:
        cfg = SAEConfig(**raw["rama"])
        if SAELENS_NAMES.get(cfg.architecture) == "jumprelu":
            cfg.architecture = "jumprelu"  # its exported threshold is what it is at inference
        return build_from_weights(cfg, weights, folder)
    return build_from_weights(cfg_from_saelens(raw, weights, folder), weights, folder)


def cfg_from_saelens(raw: dict[str, Any], weights: dict[str, torch.Tensor], folder: Path) -> SAEConfig:
    architecture = raw.get("architecture", "standard")
    known = {
        "standard": "standard",
        "topk": "topk",
        "jumprelu": "jumprelu",
        "gated": "gated",
        "transcoder": "standard",
        "skip_transcoder": "standard",
        "jumprelu_transcoder": "jumprelu",
        "jumprelu_skip_transcoder": "jumprelu",
    }
    if architecture not in known:
        raise SAEFormatError(
            f"{str(folder)!r}: unknown SAELens architecture {architecture!r}; known: {sorted(known)}"
        )
    if raw.get("normalize_activations", "none") not in ("none", None):
        raise SAEFormatError(
            f"{str(folder)!r}: normalize_activations={raw['normalize_activations']!r} needs a scale that the "
            f"folder does not carry; fold it into the weights or save with normalize_activations='none'"
        )
    if raw.get("rescale_acts_by_decoder_norm"):
        raise SAEFormatError(f"{str(folder)!r}: rescale_acts_by_decoder_norm=True is not supported")
    meta = raw.get("metadata", {}) or {}
    d_out = raw.get("d_out") or int(weights["W_dec"].shape[1])
    return SAEConfig(
        d_in=int(raw["d_in"]),
        d_sae=int(raw["d_sae"]),
        architecture=known[architecture],
        d_out=d_out if d_out != int(raw["d_in"]) or "transcoder" in architecture else None,
        k=raw.get("k"),
        skip_connection="W_skip" in weights,
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
        model_name=str(meta.get("model_name") or ""),
        hook_name=str(meta.get("hook_name") or raw.get("hook_name") or ""),
        context_size=int(meta.get("context_size") or 128),
        prepend_bos=bool(meta.get("prepend_bos", True)),
    )


def read_gemma_scope(folder: Path) -> SAE:
    import numpy as np

    try:
        arrays = dict(np.load(folder / "params.npz"))
    except Exception as error:
        raise SAEFormatError(f"{str(folder / 'params.npz')!r} is truncated or corrupt ({error})") from error
    weights = {name: torch.from_numpy(np.asarray(value, dtype=np.float32)) for name, value in arrays.items()}
    if "W_enc" not in weights:
        raise SAEFormatError(f"{str(folder)!r}: params.npz has no W_enc (has {sorted(weights)})")
    d_in, d_sae = weights["W_enc"].shape
    cfg = SAEConfig(d_in=d_in, d_sae=d_sae, architecture="jumprelu", apply_b_dec_to_input=False)
    return build_from_weights(cfg, weights, folder)


def read_sparsify(folder: Path) -> SAE:
    raw = json.loads((folder / "cfg.json").read_text()) if (folder / "cfg.json").exists() else {}
    if raw.get("activation", "topk") != "topk":
        raise SAEFormatError(
            f"{str(folder)!r}: sparsify activation {raw['activation']!r} is not supported (topk is)"
        )
    tensors = _safe_load(folder / "sae.safetensors")
    _expect(
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
    cfg = SAEConfig(
        d_in=int(raw.get("d_in", d_in)),
        d_sae=d_sae,
        architecture="topk",
        k=int(raw.get("k", 32)),
        d_out=d_out if transcode or d_out != d_in else None,
        skip_connection="W_skip" in tensors,
    )
    return build_from_weights(cfg, weights, folder)


DICTIONARY_LEARNING = {
    "AutoEncoder": "standard",
    "AutoEncoderTopK": "topk",
    "BatchTopKSAE": "jumprelu",
    "JumpReluAutoEncoder": "jumprelu",
}


def read_dictionary_learning(folder: Path) -> SAE:
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
    cfg = SAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        architecture=DICTIONARY_LEARNING[dict_class],
        k=int(trainer.get("k") or state.get("k", torch.tensor(0)).item() or 0) or None,
        apply_b_dec_to_input=dict_class != "JumpReluAutoEncoder",
    )
    return build_from_weights(cfg, weights, folder)


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
