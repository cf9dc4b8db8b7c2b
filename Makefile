# opsdesk-e2e front door. `make help` lists the targets; longer logic lives in scripts/.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
N ?= auto
SHARD ?=
PYTEST_ARGS ?=
export E2E_VENV := $(abspath $(VENV))
# `python -m testbed` reads opsdesk's e2e_* settings (project name, ports) from pytest's ini file.
export E2E_INIFILE := $(abspath backend/pyproject.toml)

BIN := $(VENV)/bin
TESTBED := $(BIN)/python -m testbed

.PHONY: help  ## Show this list
help:
	@grep -E '^\.PHONY: [a-z-]+ +## ' $(MAKEFILE_LIST) | sed -E 's/^\.PHONY: ([a-z-]+) +## (.*)/  make \1\t\2/' | expand -t 20

.PHONY: deps  ## Create .venv with the pinned dependencies (backend/uv.lock)
deps: $(VENV)/.deps-stamp

# One stamp per lock: a changed lock or pyproject re-syncs, nothing else does.
$(VENV)/.deps-stamp: backend/pyproject.toml backend/uv.lock scripts/deps.sh
	@PYTHON=$(PYTHON) VENV=$(VENV) scripts/deps.sh

.PHONY: up  ## Start PostgreSQL 16 (5433) and Valkey 8 (6380) and leave them running
up: deps
	@$(TESTBED) up

.PHONY: down  ## Stop the E2E services and remove their data
down: deps
	@$(TESTBED) down

.PHONY: status  ## Show backend, versions, ports, processes and health of the E2E services
status: deps
	@$(TESTBED) status

.PHONY: env  ## Print the running services' URLs as shell assignments
env: deps
	@$(TESTBED) env

.PHONY: reap  ## Remove what dead runs left behind (processes, data dirs, schemas, containers)
reap: deps
	@$(TESTBED) reap

.PHONY: e2e  ## Run the E2E suite in parallel (N=auto workers, SHARD=i/k for one CI shard)
e2e: deps system-libs
	@N=$(N) SHARD=$(SHARD) PYTEST_ARGS="$(PYTEST_ARGS)" scripts/e2e.sh

.PHONY: example  ## Run the example apps' suites (examples/*: testbed adopted by configuration only)
example: deps
	@N=$(if $(filter auto,$(N)),2,$(N)) PYTEST_ARGS="$(PYTEST_ARGS)" scripts/examples.sh

.PHONY: unit  ## Run the unit tests (no services)
unit: deps
	@$(BIN)/pytest backend/tests/unit -q -p no:randomly $(PYTEST_ARGS)

.PHONY: integration  ## Start and stop the native backend for real (lifecycle tests)
integration: deps
	@$(BIN)/pytest backend/tests/integration -q -p no:randomly $(PYTEST_ARGS)

.PHONY: lint  ## ruff, mypy, actionlint, compose and workflow schemas, flake parse, make -n
lint: deps nix-tools
	@scripts/lint.sh

# Under CI=true only: install the system libraries bundled extensions load (uuid-ossp).
.PHONY: system-libs
system-libs:
	@scripts/system-libs.sh

# Under CI=true only: install nix-bin when missing, so the flake checks run instead of skipping.
.PHONY: nix-tools
nix-tools:
	@scripts/nix-tools.sh

.PHONY: reliability  ## Interrupts, dying services, foreign targets, hostile input (fast subset)
reliability: deps
	@$(BIN)/pytest backend/tests/reliability -q -p no:randomly -m "not soak" $(PYTEST_ARGS)

.PHONY: test  ## Everything CI runs: lint + unit + integration + e2e + example + reliability
test: nix-tools lint unit integration e2e example reliability

.PHONY: bench  ## Benchmarks side by side; writes bench/results.json and bench/RESULTS.md
bench: deps
	@$(BIN)/python -m bench $(BENCH_ARGS)

.PHONY: soak  ## Flake hunt and long reliability checks (E2E suite 20x at -n 2 and -n 4, 10x each signal)
soak: deps
	@scripts/soak.sh

.PHONY: clean  ## Stop services, reap leftovers, remove .venv and caches
clean:
	@if [ -x $(BIN)/python ]; then $(TESTBED) down || true; $(TESTBED) reap || true; fi
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache backend/.ruff_cache backend/.mypy_cache
