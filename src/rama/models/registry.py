"""Which adapter serves which Hugging Face `model_type`. Adding an architecture: one file, one line."""

from __future__ import annotations

from typing import Any

from rama.errors import InputError
from rama.models.adapter import Adapter
from rama.models.bert import BertAdapter
from rama.models.gemma import GemmaAdapter
from rama.models.gpt2 import GPT2Adapter
from rama.models.llama import LlamaAdapter
from rama.models.neox import NeoXAdapter

ADAPTERS: tuple[type[Adapter], ...] = (
    LlamaAdapter,
    GemmaAdapter,
    GPT2Adapter,
    NeoXAdapter,
    BertAdapter,
)

BY_MODEL_TYPE: dict[str, type[Adapter]] = {t: a for a in ADAPTERS for t in a.model_types}


def adapter_for(hf_model: Any) -> Adapter:
    """The adapter for a loaded HF model, or a clear error listing what is supported."""
    model_type = getattr(getattr(hf_model, "config", None), "model_type", None)
    adapter_class = BY_MODEL_TYPE.get(str(model_type))
    if adapter_class is None:
        supported = ", ".join(sorted(BY_MODEL_TYPE))
        raise InputError(
            f"rama has no adapter for model_type {model_type!r} ({type(hf_model).__name__}). "
            f"Supported model types: {supported}. Adding one is a new file in rama/models/ "
            f"plus a line in rama/models/registry.py."
        )
    return adapter_class(hf_model)
