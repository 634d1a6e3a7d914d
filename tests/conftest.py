import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers on two cores: one thread each
    import torch

    torch.set_num_threads(1)

from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("RAMA_CHROMIUM", "/usr/bin/chromium"))
# Without the background-networking flags Chromium's own connections are refused on a closed network.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Debian Chromium per session, driven by Playwright's Python client (never its own
    browser download). Without one the browser tests skip, except when RAMA_REQUIRE_BROWSER is set
    (`.ci/run` sets it, and `make test` installs Debian's chromium first): in CI they must run."""
    if not CHROMIUM.is_file():
        message = f"no Chromium at {CHROMIUM}: `make setup` installs Debian's chromium (or set RAMA_CHROMIUM)"
        if os.environ.get("RAMA_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def smollm() -> Iterator[object]:
    """The real SmolLM2-135M through rama (converted once into the user's rama cache)."""
    import rama

    yield rama.load("smollm2-135m")


@pytest.fixture(scope="session")
def minilm() -> Iterator[object]:
    import rama

    yield rama.load("minilm-l6")
