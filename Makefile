# opsdesk-e2e front door. `make help` lists the targets; longer logic lives in scripts/.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# PYTHON: the interpreter `make deps` builds .venv on (default python3). Set it and .venv is
# rebuilt on it when the venv was built on another one; leave it unset and .venv stays as it is.
PYTHON ?=
VENV ?= .venv
BENCH_VENV ?= .venv-bench
# make workflow: which jobs (JOB or JOB:key=value,...; all by default), and more options.
JOBS ?=
WORKFLOW_ARGS ?=
N ?= auto
SHARD ?=
# Extra pytest arguments, split like shell words: PYTEST_ARGS='-k "crm or tasks" -x'.
# Exported, never re-quoted: scripts/e2e.sh reads it from the environment.
PYTEST_ARGS ?=
# make mutation: which modules (default all: guard schema breaker ownership lease).
MUTATION_TARGETS ?=
export PYTEST_ARGS
# JUNIT_DIR=reports: every pytest stage writes DIR/<stage>.xml (what CI uploads).
JUNIT_DIR ?=
export E2E_VENV := $(abspath $(VENV))
# `python -m testbed` reads opsdesk's e2e_* settings (project name, ports) from pytest's ini file.
export E2E_INIFILE := $(abspath backend/pyproject.toml)
# Python caches compiled modules only where it may write bytecode; without that cache every
# process compiles every module it imports again (pytest's rewritten plugins and tests too),
# which was over half of a pytest process's start-up where PYTHONDONTWRITEBYTECODE=1 is set.
# The cache goes under the venv, never into the source tree, so a clean tree stays clean.
unexport PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX ?= $(abspath $(VENV))/pycache

BIN := $(VENV)/bin
# The workspace: its lock and every member's pyproject (a changed one re-syncs .venv).
WORKSPACE := pyproject.toml uv.lock testbed/pyproject.toml backend/pyproject.toml
# Test trees by subject: testbed's own, opsdesk's, and the checks of this repository's tooling.
TESTBED_TESTS := testbed/tests
TESTBED := $(BIN)/python -m testbed
# $(call junit,NAME): pytest's --junitxml option for JUNIT_DIR/NAME.xml, or nothing.
junit = $(if $(JUNIT_DIR),'--junitxml=$(abspath $(JUNIT_DIR))/$(1).xml')

.PHONY: help  ## Show this list
help:
	@grep -E '^\.PHONY: [a-z0-9][a-z0-9-]* +## ' $(MAKEFILE_LIST) | sed -E 's/^\.PHONY: ([a-z0-9-]+) +## (.*)/  make \1\t\2/' | expand -t 20

.PHONY: deps  ## Create .venv with the pinned dependencies (uv.lock)
deps: $(VENV)/.deps-stamp

# One stamp per lock: a changed lock or pyproject re-syncs. So does a PYTHON that is not the one
# .venv was built with (scripts/deps.sh records it in .deps-python), e.g. on entering `nix develop`.
$(VENV)/.deps-stamp: $(WORKSPACE) scripts/deps.sh
	@PYTHON='$(PYTHON)' VENV='$(VENV)' scripts/deps.sh
ifneq ($(PYTHON),)
ifneq ($(PYTHON),$(strip $(file < $(VENV)/.deps-python)))
.PHONY: $(VENV)/.deps-stamp
endif
endif

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

.PHONY: e2e  ## Run opsdesk's E2E suite in parallel (N=auto workers, SHARD=i/k for one CI shard)
e2e: deps system-libs
	@N='$(N)' SHARD='$(SHARD)' SUITE=backend/tests/e2e PYTEST_ARGS="$(call junit,e2e$(if $(E2E_JUNIT),-$(E2E_JUNIT))) $$PYTEST_ARGS" $(if $(filter docker,$(E2E_BACKEND)),scripts/with-docker.sh) scripts/e2e.sh

# make test runs the suite on both backends; the docker leg needs an engine (CI=true provides one).
.PHONY: e2e-native e2e-docker
e2e-native:
	@$(MAKE) --no-print-directory e2e E2E_BACKEND=native E2E_JUNIT=native
e2e-docker:
	@if [ "$${CI:-}" = true ] || scripts/docker-engine.sh check >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory e2e E2E_BACKEND=docker E2E_JUNIT=docker; \
	else echo "e2e-docker: skipped: $$(scripts/docker-engine.sh check 2>&1 | head -n 1 | sed 's/^docker-engine: //') (CI=true provides an engine)"; fi

.PHONY: images  ## Build PostgreSQL 16.15 / Valkey 8.1.8 images from the pinned wheels (no registry needed)
images: deps
	@scripts/docker-engine.sh run -- scripts/docker-images.sh

.PHONY: example  ## Run the example apps' suites (examples/*: testbed adopted by configuration only)
example: deps
	@N='$(if $(filter auto,$(N)),2,$(N))' scripts/examples.sh

.PHONY: adoption  ## A service outside this layout adopts testbed from the built wheel (its own pins, -n 0 and -n 2)
adoption: deps
	@E2E_REQUIRE_SERVICES=1 scripts/adoption.sh

# unit is the fast loop of code (≤ 15 s, bench/stages.py); tooling runs make, uv, mkdocs, ruff,
# compose and act on this repository's files, so it is a stage of its own.
.PHONY: unit  ## Run the unit tests of testbed and opsdesk (no services, random order)
# One xdist worker per core: on a quiet 2-core machine 15-17 s instead of 19 s in one process
# (PYTEST_ARGS="-n 0" for one process, e.g. with a debugger).
unit: deps
	@$(BIN)/pytest $(TESTBED_TESTS)/unit backend/tests/unit -q --numprocesses=auto $(call junit,unit) $(PYTEST_ARGS)

.PHONY: tooling  ## Check the Makefile, scripts, workflow, docs and lint validators (runs those tools)
# One worker per core: nearly every check runs a tool (uv, make, mkdocs, check-jsonschema) in a
# temp copy of its own, so they run side by side.
tooling: deps
	@$(BIN)/pytest tests/tooling -q --numprocesses=$(N) $(call junit,tooling) $(PYTEST_ARGS)

.PHONY: mutation  ## Mutation score of guard, schema, breaker, ownership and lease against their unit tests (CPU-heavy)
mutation: deps
	@$(BIN)/python scripts/mutation.py $(MUTATION_TARGETS)

# integration and reliability run side by side too (N=auto: one worker per core), longest first:
# their tests spend much of their time waiting on servers, engines and inner runs, each on
# ports of its worker's own (conftest.py's worker_ports) and a state dir of its own.
.PHONY: integration  ## Tests that start services or run tools for real (lifecycle, shards, lint), then testbed-e2e
integration: deps
	@scripts/with-docker.sh $(BIN)/pytest $(TESTBED_TESTS)/integration -q -p no:randomly --numprocesses=$(N) --dist loadgroup $(call junit,integration) $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory testbed-e2e

.PHONY: testbed-e2e  ## testbed's own E2E tests on its tiny app, in parallel (services required, as make e2e)
testbed-e2e: deps
	@N='$(N)' SHARD= SUITE=$(TESTBED_TESTS)/e2e PYTEST_ARGS="$(call junit,testbed-e2e) $$PYTEST_ARGS" $(if $(filter docker,$(E2E_BACKEND)),scripts/with-docker.sh) scripts/e2e.sh

.PHONY: lint  ## ruff, mypy, actionlint, schemas, flake checks, make -n (CI=true: installs nix-bin if missing)
lint: deps nix-tools
	@scripts/lint.sh

# Under CI=true only: install the system libraries bundled extensions load (uuid-ossp).
.PHONY: system-libs
system-libs:
	@scripts/system-libs.sh

# Under CI=true only: install Debian's nix-bin when nix is missing, so the flake checks run
# instead of skipping. Elsewhere lint installs nothing and skips the flake checks with a note.
.PHONY: nix-tools
nix-tools:
	@scripts/nix-tools.sh

.PHONY: reliability  ## Interrupts, dying services, foreign targets, hostile input (fast subset)
reliability: deps
	@scripts/with-docker.sh $(BIN)/pytest $(TESTBED_TESTS)/reliability -q -p no:randomly -m "not soak" --numprocesses=$(N) --dist loadgroup $(call junit,reliability) $(PYTEST_ARGS)

.PHONY: test  ## Everything CI runs: lint + unit + tooling + integration + e2e (native and docker) + example + adoption + reliability
test: deps
	@HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-ci} scripts/with-docker.sh $(MAKE) --no-print-directory test-steps

# Under CI=true, with-docker.sh provides one Docker engine for all of these and stops it after.
.PHONY: test-steps
test-steps: nix-tools lint unit tooling integration e2e-native e2e-docker example adoption reliability

.PHONY: workflow  ## Run the CI workflow's jobs here with act, one at a time (JOBS="lint:python=3.12 e2e:group=1", LIST=1)
workflow: deps
	@scripts/with-docker.sh $(BIN)/python scripts/workflow.py $(if $(LIST),--list) $(WORKFLOW_ARGS) $(JOBS)

.PHONY: bench  ## Benchmarks side by side; writes bench/results.json and bench/RESULTS.md
bench: deps $(BENCH_VENV)/.deps-stamp
	@$(BENCH_VENV)/bin/python -m bench $(BENCH_ARGS)

# The bench's own venv: the test venv plus the bench group (factory-boy, pytest-postgresql),
# which would otherwise slow every pytest run down (see default-groups in pyproject.toml).
$(BENCH_VENV)/.deps-stamp: $(WORKSPACE) scripts/deps.sh
	@PYTHON='$(PYTHON)' VENV='$(BENCH_VENV)' DEPS_GROUPS=bench scripts/deps.sh

.PHONY: soak  ## Flake hunt and long reliability checks (E2E suite 20x at -n 2 and -n 4, 10x each signal)
soak: deps
	@scripts/with-docker.sh scripts/soak.sh

.PHONY: clean  ## Stop services, reap leftovers, remove .venv and caches
clean:
	@if [ -x $(BIN)/python ]; then $(TESTBED) down || true; $(TESTBED) reap || true; fi
	rm -rf $(VENV) $(BENCH_VENV) .venv-adoption $(VENV).lock $(BENCH_VENV).lock .pytest_cache .ruff_cache .mypy_cache
