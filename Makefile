# Two commands set everything up on a fresh machine:
#   make run   - create .venv, install retailml, run the whole lifecycle (retailml demo)
#   make test  - create .venv with dev extras, check services, lint, type-check, test
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test install install-dev services lint typecheck layers pytest bench clean help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s '	'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install only when the project's dependencies change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed ## create .venv and install retailml

install-dev: $(VENV)/.installed-dev ## create .venv and install retailml with dev extras

run: install ## run the whole lifecycle on the embedded defaults
	$(BIN)/retailml demo

services: ## check (and if needed start) the local PostgreSQL the tests use
	bash scripts/ensure-services.sh

lint: install-dev ## ruff lint and format check
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: install-dev ## mypy on the package
	$(BIN)/mypy

layers: install-dev ## import-linter layer contracts
	$(BIN)/lint-imports

pytest: install-dev services ## the test suite
	$(BIN)/pytest

test: lint typecheck layers pytest ## everything CI runs

bench: install-dev ## benchmarks (not part of the test suite)
	$(BIN)/python benchmarks/bench_generate.py
	$(BIN)/python benchmarks/bench_features.py

clean: ## remove the virtual environment and the default workspace
	rm -rf $(VENV) workspace
