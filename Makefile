# The two commands a new user runs (see README.md):
#   make demo   installs everything and deploys the example model locally
#   make test   installs everything and runs the checks and the test suite (what CI runs)
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install demo test lint unit azurite

# Azurite (npm), the storage emulator the functions blob-trigger tests run against
# (tests/azurite.py reads the same folder and version).
AZURITE_VERSION := 3.35.0
AZURITE_DIR ?= .cache/azurite
AZURITE := $(AZURITE_DIR)/node_modules/.bin/azurite-blob

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

azurite: $(AZURITE)

# Installed once per version (a marker per version makes a version bump reinstall).
$(AZURITE): | $(AZURITE_DIR)/.version-$(AZURITE_VERSION)
$(AZURITE_DIR)/.version-$(AZURITE_VERSION):
	mkdir -p $(AZURITE_DIR)
	npm install --prefix $(AZURITE_DIR) --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION)
	touch $@

test: lint azurite
	eval "$$(scripts/dev-env)" && $(BIN)/pytest tests example-repo/tests

# The tests that need neither Docker nor the registry, for a quick loop.
unit: install azurite
	$(BIN)/pytest -m "not docker" tests example-repo/tests
