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

# --- the ML pipeline, as .github/workflows/ml-pipeline.yml runs it --------------------------
# test -> train -> validate -> deploy to staging -> deployment tests; each CI step is one of
# these targets, and each runs locally too (workspace: ML_HOME, default ./workspace).
ML_HOME       ?= $(or $(RETAILML_HOME),workspace)
TRAIN_CONFIG  ?= configs/sales_forecast.yaml
MODEL_DIR     ?= $(ML_HOME)/artifacts/models
MODEL_NAME    ?= sales_forecast
# Versions only increase per model: a timestamp patch number keeps local re-runs valid.
MODEL_VERSION ?= 0.1.$(shell date -u +%Y%m%d%H%M%S)
SAMPLE_ROWS   ?= 50000
STAGING_PORT  ?= 8765
# Extra `retailml validate` options, e.g. VALIDATE_ARGS="--threshold smape=1.2".
VALIDATE_ARGS ?=
STAGING_URL   ?=
SMOKE_API_KEY ?= ci-smoke-key
# The smoke request of `make test-deployment` (a forecast; another model type: another route).
SMOKE_PATH    ?= /api/v1/ml/forecast
SMOKE_BODY    ?= {"model_name": "$(MODEL_NAME)", "horizon": 3}
RETAILML      := RETAILML_HOME=$(ML_HOME) $(BIN)/retailml

.PHONY: sample-data train validate-model deploy-staging test-deployment ml-pipeline check-freshness \
  ci-system-deps

ci-system-deps: ## CI runners: install Redis and the PostgreSQL client the test suite needs
	sudo apt-get update -qq
	sudo apt-get install -y -qq redis-server postgresql-client

sample-data: install ## sample transactions (only into an empty workspace) and every feature set
	@if [ -z "$$(ls $(ML_HOME)/data/silver/transactions 2>/dev/null)" ]; then \
	  $(RETAILML) data generate --rows $(SAMPLE_ROWS) --output $(ML_HOME)/data/landing/sample.csv \
	  && $(RETAILML) data ingest $(ML_HOME)/data/landing/sample.csv; \
	else echo "$(ML_HOME) has silver data: not generating any"; fi
	$(RETAILML) features build

check-freshness: install ## stop (exit 1) when no new data arrived in 2 days or features lag
	$(RETAILML) maintenance check-freshness

train: sample-data ## train TRAIN_CONFIG's model into MODEL_DIR (CI: the train step)
	$(RETAILML) train --config $(TRAIN_CONFIG) --output-dir $(MODEL_DIR)

validate-model: install ## validate MODEL_DIR/latest on its held-out data (exit 1 on failure)
	$(RETAILML) validate --model-path $(MODEL_DIR)/latest $(VALIDATE_ARGS)

deploy-staging: install ## register MODEL_DIR/latest as MODEL_VERSION and deploy it to staging
	$(RETAILML) register --model-path $(MODEL_DIR)/latest --name $(MODEL_NAME) \
	  --version $(MODEL_VERSION)
	$(RETAILML) deploy --environment staging --model $(MODEL_NAME) --version $(MODEL_VERSION)

test-deployment: install ## smoke-test the staging endpoint (STAGING_URL, else a local `retailml serve`)
	@set -e; url="$(STAGING_URL)"; \
	if [ -z "$$url" ]; then \
	  url="http://127.0.0.1:$(STAGING_PORT)"; \
	  RETAILML_API_KEYS=$(SMOKE_API_KEY) $(RETAILML) serve --environment staging \
	    --port $(STAGING_PORT) & server=$$!; \
	  trap 'kill $$server 2>/dev/null || true' EXIT; \
	fi; \
	for i in $$(seq 120); do curl -fsS "$$url/ready" >/dev/null 2>&1 && break; sleep 1; done; \
	ready=$$(curl -fsS "$$url/ready"); echo "ready: $$ready"; \
	answer=$$(curl -fsS -X POST "$$url$(SMOKE_PATH)" -H 'X-API-Key: $(SMOKE_API_KEY)' \
	  -H 'Content-Type: application/json' -d '$(SMOKE_BODY)'); \
	echo "$(SMOKE_PATH): $$answer" | cut -c 1-300; \
	metrics=$$(curl -fsS "$$url/metrics"); \
	echo "$$metrics" | grep -q '^retailml_' && echo "metrics: exposed"

ml-pipeline: train validate-model deploy-staging test-deployment ## the CI pipeline after `make test`, locally
