# lifeboat.backup — developer and CI entry points. See docs/development.md.
#   make demo          backup -> disaster -> restore of an embedded sandbox platform
#   make test          everything CI runs: lint, unit, integration, molecule
#   make test-matrix   sanity, unit and integration on the other supported cores and Pythons
#   make lint | unit | integration | faults | molecule | bench | deps | clean
SHELL := /bin/bash
.DEFAULT_GOAL := help
ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
BIN := $(VENV)/bin
export LIFEBOAT_CACHE ?= $(HOME)/.cache/lifeboat
export ANSIBLE_COLLECTIONS_PATH := $(ROOT)/.build/collections
export PYTHONPATH := $(ROOT)/.build/collections
export CONTAINERS_CONF := $(ROOT)/extensions/molecule/containers.conf
# Ansible's own state (tmp, installed collections, ansible-lint's) stays in the clone, so a
# stale copy of this collection in ~/.ansible never shadows the working tree.
export ANSIBLE_HOME := $(ROOT)/.build/ansible-home
export ANSIBLE_FORCE_COLOR ?= 0
export PATH := $(BIN):$(PATH)
# pytest selection for integration: make integration K=postgresql
K ?=
PYTEST_ARGS ?=

.PHONY: help
help:
	@sed -n '1,5p' Makefile | sed 's/^# \{0,1\}//'

# ---- set-up (idempotent, cached) -------------------------------------------
.PHONY: deps os-deps venv collection servers image
deps: os-deps venv collection

os-deps:
	@scripts/install-os-deps.sh

venv: os-deps
	@scripts/bootstrap-venv.sh

collection:
	@scripts/collection-path.sh

servers: deps
	@$(BIN)/python -m tests.harness.fetch

image: deps
	@scripts/build-image.sh

# ---- checks ------------------------------------------------------------------
.PHONY: test lint ruff ansible-lint changelog sanity complexity unit integration molecule
# `make test` = scripts/run-tests.sh: ruff, changelog, then two lanes side by side:
# unit, integration | ansible-lint, sanity, molecule, the benchmarks in --small mode. The servers
# and the testbed image are made first, so the lanes never fetch or build at once.
# TEST_LANES=1 runs everything in one lane.
test: deps servers image
	@scripts/run-tests.sh

lint: ruff ansible-lint changelog sanity complexity

ruff: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Function length and cyclomatic complexity (radon): a report for review, never a gate.
complexity: deps
	@$(BIN)/python scripts/function-report.py plugins

ansible-lint: deps
	$(BIN)/ansible-lint --profile production

# Fragments well-formed, changelog.yaml consistent (docs/development.md, "Changelog").
changelog: deps
	$(BIN)/antsibull-changelog lint

# `ansible-test --venv` keeps its virtualenvs in ~/.ansible/test/venv whatever ANSIBLE_HOME
# says, so two clones running sanity at once would rebuild each other's: each clone gets
# its own HOME for ansible-test (pip's download cache stays shared).
SANITY_HOME := $(ROOT)/.build/sanity-home
sanity: deps
	@HOME=$(SANITY_HOME) scripts/install-get-pip-shim.sh
	@copy=$$(scripts/collection-path.sh --copy) && cd "$$copy" && \
	  HOME=$(SANITY_HOME) PIP_CACHE_DIR=$(HOME)/.cache/pip \
	  $(BIN)/ansible-test sanity --color no --python 3.11 --venv $(SANITY_ARGS)

unit: deps
	$(BIN)/pytest -c tests/pytest.ini tests/unit $(PYTEST_ARGS)

# Two workers, whole files each (module-scoped servers stay in one worker): most of an
# integration test is waiting on a server or a child process, so two run in about the
# time of one on this 2-core machine. INTEGRATION_WORKERS=0 runs them in this process.
# T= names test files or node ids instead of the whole directory (make integration
# T=tests/integration/test_pitr.py); K= selects by keyword.
INTEGRATION_WORKERS ?= 2
integration: deps servers
	$(BIN)/pytest -c tests/pytest.ini $(or $(T),tests/integration) $(if $(K),-k "$(K)") \
	  $(if $(filter-out 0,$(INTEGRATION_WORKERS)),-n $(INTEGRATION_WORKERS) --dist loadfile --no-loadscope-reorder) \
	  --durations=25 --junitxml=$(ROOT)/.build/logs/integration.xml $(PYTEST_ARGS)

# The fault matrix (docs/development.md, "Fault matrix"): only the tests marked
# @pytest.mark.fault, then the summary of .build/fault-matrix.json; exits as pytest did.
.PHONY: faults
faults: deps servers
	@status=0; $(BIN)/pytest -c tests/pytest.ini $(or $(T),tests/integration) -m fault $(if $(K),-k "$(K)") \
	  $(if $(filter-out 0,$(INTEGRATION_WORKERS)),-n $(INTEGRATION_WORKERS) --dist loadfile) \
	  --durations=10 $(PYTEST_ARGS) || status=$$?; \
	  $(BIN)/python scripts/fault-summary.py; exit $$status

molecule: deps image
	@scripts/run-molecule.sh

# ---- support matrix: other cores and Pythons (docs/development.md, "Support matrix") ----
# The main venv's core (requirements/test.txt) on Python 3.11 is what the stages above test.
export MATRIX_CORES := 2.16 2.18 2.21
export MATRIX_NODE_PYTHONS := 3.9 3.12 3.13
MATRIX_STAGES := $(foreach c,$(MATRIX_CORES),matrix-sanity-$(c)) matrix-compile \
	$(foreach p,$(MATRIX_NODE_PYTHONS),matrix-unit-$(p)) matrix-integration
.PHONY: test-matrix matrix-pythons matrix-compile matrix-integration
test-matrix: deps servers
	@scripts/run-tests.sh $(MATRIX_STAGES)

matrix-sanity-%: deps
	@scripts/matrix.sh sanity $*

# compile and import tests of the node code on every node Python, by the newest core
matrix-compile: deps
	@scripts/matrix.sh compile $(lastword $(MATRIX_CORES))

matrix-unit-%: deps
	@scripts/matrix.sh unit $* $(PYTEST_ARGS)

matrix-integration: deps servers
	@scripts/matrix.sh integration $(if $(K),-k "$(K)") $(PYTEST_ARGS)

# The Pythons of the matrix (CPython from Maven Central; scripts/install-python.sh says why).
matrix-pythons:
	@scripts/install-python.sh --bin-dir

# ---- product -----------------------------------------------------------------
.PHONY: demo bench bench-small
demo: deps servers
	@scripts/demo.sh

bench: deps servers
	@scripts/run-benchmarks.sh

bench-small: deps servers
	@scripts/run-benchmarks.sh --small

.PHONY: clean
clean:
	rm -rf .build .pytest_cache .ruff_cache tests/output
