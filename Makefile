# The two commands a new user runs (see README.md):
#   make demo   installs everything and deploys the example model locally
#   make test   installs everything and runs the checks and the test suite (what CI runs)
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install demo test lint unit

install: $(VENV)/.installed

# Reinstall when the dependencies change; the package itself is installed editable.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: install
	eval "$$(scripts/dev-env)" && $(BIN)/deployer deploy -c example-repo/deploy.yaml -t local

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	eval "$$(scripts/dev-env)" && $(BIN)/pytest tests example-repo/tests

# The tests that need neither Docker nor the registry, for a quick loop.
unit: install
	$(BIN)/pytest -m "not docker" tests example-repo/tests
