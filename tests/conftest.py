import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers on two cores: one thread each
    import torch

    torch.set_num_threads(1)

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def smollm() -> Iterator[object]:
    """The real SmolLM2-135M through rama (converted once into the user's rama cache)."""
    import rama

    yield rama.load("smollm2-135m")


@pytest.fixture(scope="session")
def minilm() -> Iterator[object]:
    import rama

    yield rama.load("minilm-l6")
