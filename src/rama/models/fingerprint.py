"""A content fingerprint of a model's weights, for keying caches and checking portable files.

A path says where a model came from, not what it is: two checkpoints in one folder, or a
fine-tune saved under the base model's name, must not share an activation cache or a probe.
Hashing all of SmolLM2's 538 MB would cost about a second per call, so each tensor contributes
its name, shape, dtype and an evenly strided sample of at most 4,096 of its values; any training
step changes nearly every value, so a changed model changes its fingerprint.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

SAMPLES_PER_TENSOR = 4096


def tensor_digest_input(name: str, tensor: torch.Tensor) -> bytes:
    """What one named tensor contributes to the fingerprint."""
    flat = tensor.detach().reshape(-1)
    stride = max(1, flat.numel() // SAMPLES_PER_TENSOR)
    sample = flat[::stride][:SAMPLES_PER_TENSOR].to("cpu", torch.float64).contiguous()
    header = f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode()
    return header + sample.numpy().tobytes()


def weights_fingerprint(module: nn.Module) -> str:
    """A 16-hex-digit digest of `module`'s parameters and buffers (names, shapes, dtypes, values)."""
    digest = hashlib.sha256()
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        if tensor.device.type == "meta":
            raise ValueError(f"cannot fingerprint {name!r}: it is on the meta device (not loaded)")
        digest.update(tensor_digest_input(name, tensor))
    return digest.hexdigest()[:16]
