"""Vector files for steering: every readable format round-trips; every bad file is one InputError
that names it (a RamaError: the CLI prints one line, not a traceback)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from rama.errors import ConfigError, InputError, RamaError
from rama.interventions.steering_sources import SteeringSource, load_vector


def test_each_format_round_trips(tmp_path: Path) -> None:
    vector = torch.arange(6, dtype=torch.float64) / 7
    torch.save(vector, tmp_path / "v.pt")
    np.save(tmp_path / "v.npy", vector.numpy())
    save_file({"direction": vector.contiguous()}, str(tmp_path / "v.safetensors"))
    for name in ("v.pt", "v.npy", "v.safetensors"):
        loaded = load_vector(tmp_path / name)
        assert loaded.dtype == torch.float32
        torch.testing.assert_close(loaded, vector.float())


def test_bad_vector_files_are_input_errors_naming_the_file(tmp_path: Path) -> None:
    torch.save(torch.ones(64), tmp_path / "whole.pt")
    data = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pt").write_bytes(b"not a pickle at all" * 10)
    (tmp_path / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "garbage.safetensors").write_bytes(b"\xff" * 40)
    torch.save(torch.ones(2, 3), tmp_path / "matrix.pt")
    save_file({"a": torch.ones(2), "b": torch.ones(2)}, str(tmp_path / "two.safetensors"))
    (tmp_path / "v.txt").write_text("1 2 3")
    cases = {
        "missing.pt": "no vector file",
        "truncated.pt": "cannot read",
        "garbage.pt": "cannot read",
        "garbage.npy": "cannot read",
        "garbage.safetensors": "cannot read",
        "matrix.pt": "1-d tensor",
        "two.safetensors": "holds 2 tensors",
        "v.txt": ".pt, .npy or .safetensors",
    }
    for name, message in cases.items():
        with pytest.raises(InputError, match=message) as caught:
            load_vector(tmp_path / name)
        assert isinstance(caught.value, RamaError) and name in str(caught.value), name


def test_a_source_is_exactly_one_thing() -> None:
    with pytest.raises(ConfigError, match="exactly one steering source"):
        SteeringSource(vector="v.pt", contrast=(("a",), ("b",)))
    with pytest.raises(ConfigError, match="--feature"):
        SteeringSource(sae="folder")
