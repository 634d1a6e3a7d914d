"""Page fixtures over the session's headless Chromium (`browser`, in tests/conftest.py): a fresh page per
test, and a folder for the pages' screenshots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SCREENSHOTS = Path(__file__).parent / "artifacts"
VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (its own cookies and cache) whose browser-side errors fail the test."""
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """tests/web/artifacts/, which git ignores through its own .gitignore."""
    SCREENSHOTS.mkdir(exist_ok=True)
    (SCREENSHOTS / ".gitignore").write_text("*\n")
    return SCREENSHOTS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    shots = sorted(SCREENSHOTS.glob("*.png")) if SCREENSHOTS.is_dir() else []
    if shots:
        terminalreporter.write_line(f"browser screenshots: {len(shots)} in {SCREENSHOTS}")
