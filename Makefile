# Two entry points: `make demo` (the main job) and `make test` (the suite and the docs build). Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU machines get the CPU wheel of torch (it lies on disk here); GPU users: see README.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.rama-installed

.PHONY: setup browser demo test lint typecheck docs bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

# The browser tests (tests/web/test_browser.py) drive Debian's chromium through Playwright's Python client; a test
# tool's own browser download fails offline, so apt installs it once (as root, quietly; a no-op once present).
# Elsewhere install a Chromium yourself and point RAMA_CHROMIUM at it; without one those tests skip, except under
# .ci/run (RAMA_REQUIRE_BROWSER=1), where they fail.
RAMA_CHROMIUM ?= /usr/bin/chromium
export RAMA_CHROMIUM
APT_LOG := $(VENV)/apt-chromium.log

browser: $(STAMP)
	@if [ ! -x "$(RAMA_CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests (log: $(APT_LOG))"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    { apt-get -q update && apt-get -q install -y --no-install-recommends \
	        chromium fonts-liberation fonts-dejavu-core; } >$(APT_LOG) 2>&1 \
	      || { tail -n 20 $(APT_LOG); echo "apt-get could not install chromium"; exit 1; }; \
	  else \
	    echo "no $(RAMA_CHROMIUM), and apt-get needs root: install Chromium and set RAMA_CHROMIUM to run the browser tests"; \
	  fi; \
	fi

setup: $(STAMP) browser

demo: $(STAMP)
	$(BIN)/rama demo

# The suite runs in two worker processes (pytest-xdist), one test file per worker at a time, one torch thread
# each (tests/conftest.py): on two cores that is what keeps it well under its 12-minute budget.
test: $(STAMP) browser
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n 2 --dist loadfile
	$(BIN)/mkdocs build --strict --quiet

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

# The documentation site into site/ (git ignores it); a broken link or anchor fails the build.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/hook_overhead.py

clean:
	rm -rf $(VENV) rama-demo site
