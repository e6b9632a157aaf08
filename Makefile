# nwb2pennsieve: every target sets itself up; `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# npm installs the ASL validator from the committed lockfile (prerequisites expand when read: define first).
NODE_STAMP := node_modules/.installed
# The shared folder beside the checkout: the corpus and the anchors the tests run against.
SHARED ?= $(or $(NWB2PENNSIEVE_SHARED),../shared)
# Pennsieve's reference bundle reader, built from the anchor's copy for the bundle tests (needs Node).
READER := build/tszarr-reader
READER_STAMP := $(READER)/.built

# Python 3.12 (the Lambda runtime): on PATH if it works there, else the newest 3.12 that pyenv has.
PY312 := $(shell python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null)
ifeq ($(PY312),)
PYENV_312 := $(shell pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$$' | sort -V | tail -n 1)
ifneq ($(PYENV_312),)
PY312 := $(shell PYENV_VERSION=$(PYENV_312) pyenv exec python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null)
endif
endif

INPUT_DIR ?= data/input
OUTPUT_DIR ?= data/output
export INPUT_DIR OUTPUT_DIR

.PHONY: help venv install pre-commit test test-unit test-pythons test-cov lint run clean build validate preflight deploy bench fuzz local-invoke reference-venv bench-import-assets image

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-11s %s\n", $$1, $$2}'

$(VENV)/bin/python:
	@if [ -z "$(PY312)" ]; then \
	  echo "error: Python 3.12 (the Lambda runtime) was not found: install it (e.g. 'pyenv install 3.12') and run make again." >&2; \
	  exit 1; fi
	$(PY312) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(VENV)/bin/python ## create .venv on Python 3.12

install: $(STAMP) ## install the package (editable) and the dev tools into .venv

pre-commit: install ## install the git pre-commit hook (ruff, mypy)
	$(VENV)/bin/pre-commit install

test: install $(NODE_STAMP) $(READER_STAMP) ## lint, then every tier: unit, integration, e2e (slow ones and the validators included)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/unit tests/integration tests/e2e

test-unit: install ## the unit tier only: no network, no slow test; runs in seconds
	$(VENV)/bin/pytest -q -p no:cacheprovider -m "not slow" tests/unit

test-pythons: install ## pip install . into fresh Python 3.11 and 3.13 venvs (pyenv), convert the sample like 3.12
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/integration/test_pythons.py

test-cov: install $(NODE_STAMP) $(READER_STAMP) ## tests with a coverage report
	$(VENV)/bin/pytest -q -p no:cacheprovider --cov --cov-report=term-missing

lint: install ## ruff (lint + format check) and mypy on the core
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

run: install ## convert $(INPUT_DIR)/*.nwb into $(OUTPUT_DIR) (a bundled sample when there is none)
	$(VENV)/bin/nwb2pennsieve run

bench: install ## run the benchmarks in bench/ (docs/benchmarks.md has each one's command)
	$(PY) bench/bench_convert.py

# Pennsieve's reference processor (../shared/anchors, beside the checkout) in a venv of its own,
# for the benchmarks that run it side by side with ours (never for the tests).
REF_DIR ?= ../shared/anchors/processor-post-timeseries
REF_VENV := build/venv-reference
$(REF_VENV)/.installed: $(VENV)/bin/python
	@test -f $(REF_DIR)/processor/requirements.txt || { echo "error: the reference processor is not at $(REF_DIR) (set REF_DIR)" >&2; exit 1; }
	$(PY312) -m venv $(REF_VENV)
	$(REF_VENV)/bin/python -m pip install --quiet -r $(REF_DIR)/processor/requirements.txt
	@touch $@

reference-venv: $(REF_VENV)/.installed ## a venv of Pennsieve's reference processor in build/ (for bench/)

bench-import-assets: install $(REF_VENV)/.installed ## viewer-asset import: ours vs the reference's on the fake (BENCH_ARGS=...)
	$(PY) bench/bench_asset_import.py --reference-python $(REF_VENV)/bin/python --reference-dir $(REF_DIR) $(BENCH_ARGS)

# The Pennsieve app's image (Dockerfile, app.yml). Wheels are built on this machine (the image's
# build needs no network); BASE_IMAGE must be a Python 3.12 image Docker has or can pull.
IMAGE ?= nwb2pennsieve:latest
BASE_IMAGE ?= python:3.12-slim
image: install ## the Pennsieve app's image (entry point: nwb2pennsieve run); needs Docker and BASE_IMAGE
	@docker info >/dev/null 2>&1 || { echo "error: make image needs a running Docker daemon (docker info failed)" >&2; exit 1; }
	@docker image inspect $(BASE_IMAGE) >/dev/null 2>&1 || docker pull $(BASE_IMAGE) >/dev/null 2>&1 || { \
	  echo "error: the base image $(BASE_IMAGE) is neither here nor pullable: give BASE_IMAGE=<a Python 3.12 image>" >&2; exit 1; }
	rm -rf build/image && mkdir -p build/image/smoke
	$(PY) -m pip wheel --quiet --wheel-dir build/image/wheels '.[local]'
	docker build --quiet --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(IMAGE) .
	@# Smoke run: with an empty INPUT_DIR default, the bundled sample, converted without importing.
	docker run --rm --user "$$(id -u):$$(id -g)" -e ENVIRONMENT=local -e OUTPUT_DIR=/out \
	  -v "$(CURDIR)/build/image/smoke:/out" $(IMAGE)
	@ls build/image/smoke/sample/channel-00000.metadata.json >/dev/null && echo "$(IMAGE): converted the sample"

SEED ?= 1
COUNT ?= 300
fuzz: install ## a bigger corruption fuzz run than make test's (SEED=1 COUNT=300): bench/fuzz.py
	$(PY) bench/fuzz.py --seed $(SEED) --count $(COUNT)

clean: ## remove the venv, build output, caches and data/output
	rm -rf $(VENV) build .aws-sam .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov data/output bench/out
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# --- AWS: see docs/cloud.md ---------------------------------------------------------------------
# The validators run offline: a region is all sam/cfn-lint need; no credentials, no telemetry.
AWS_OFFLINE := AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} SAM_CLI_TELEMETRY=0

$(NODE_STAMP): package.json package-lock.json
	npm ci --silent
	@touch $@

# Without Node the tests that open bundles with the reader skip, and say so; the stamp is not made.
$(READER_STAMP):
	@if ! command -v node >/dev/null 2>&1; then \
	  echo "note: node not found: the tests that open bundles with Pennsieve's reader will be skipped"; exit 0; fi; \
	test -d "$(SHARED)/anchors/timeseries-zarr-reader" || { echo "error: $(SHARED)/anchors/timeseries-zarr-reader is missing (set SHARED)" >&2; exit 1; }; \
	rm -rf $(READER) && mkdir -p build && cp -r "$(SHARED)/anchors/timeseries-zarr-reader" $(READER) && chmod -R u+w $(READER) && \
	rm -rf $(READER)/node_modules $(READER)/dist && cd $(READER) && npm ci --silent --no-audit --no-fund && \
	{ npx --no-install tsc -p tsconfig.build.json >/dev/null 2>&1 || test -f dist/index.js; } && touch .built

validate: install $(NODE_STAMP) ## sam validate --lint, cfn-lint and asl-validator on template and state machine
	$(AWS_OFFLINE) $(VENV)/bin/sam validate --lint --template template.yaml
	$(AWS_OFFLINE) $(VENV)/bin/cfn-lint template.yaml
	$(PY) statemachine/render.py build/nwb2pennsieve.asl.json
	node_modules/.bin/asl-validator --json-path build/nwb2pennsieve.asl.json

build: install ## build the Lambda layers (arm64, CPython 3.12, no Docker) into build/layers
	$(PY) layers/build_layers.py

# Parameters for preflight and deploy: PARAMS="WriteConcurrency=50 ImporterEnabled=true ..." (as sam deploy's
# --parameter-overrides, replacing samconfig.toml's); docs/deploy.md.
PARAMS ?=
PREFLIGHT ?= 1
preflight: install ## does the AWS account take the parameters (PARAMS=...)? read-only; docs/deploy.md
	$(PY) -m statemachine.preflight $(if $(PARAMS),--parameter-overrides $(PARAMS)) $(PREFLIGHT_ARGS)

deploy: build validate ## make preflight, then sam deploy (samconfig.toml's default environment; PARAMS=..., PREFLIGHT=0 skips the check)
	$(if $(filter 0,$(PREFLIGHT)),,$(MAKE) --no-print-directory preflight PARAMS='$(PARAMS)')
	SAM_CLI_TELEMETRY=0 $(VENV)/bin/sam deploy $(if $(PARAMS),--parameter-overrides $(PARAMS))

# The walkthrough (docs/cloud.md): INPUT_BUCKET and OUTPUT_BUCKET you own, or LOCAL_S3=1 (a moto server).
# LOCAL_ARCH=x86_64 for a machine that cannot run arm64 images; INVOKE=process runs the handlers without Docker.
LOCAL_ARCH ?= arm64
LOCAL_LAYERS := $(if $(filter x86_64,$(LOCAL_ARCH)),build/layers-x86_64,build/layers)
local-invoke: install ## upload the sample, sam local invoke Plan, then WriteChunks, Finalize... on events derived from it
	$(if $(filter process,$(INVOKE)),,$(PY) layers/build_layers.py --arch $(LOCAL_ARCH))
	SAM_CLI_TELEMETRY=0 $(PY) -m statemachine.walkthrough --arch $(LOCAL_ARCH) --layers $(LOCAL_LAYERS) \
	  $(if $(LOCAL_S3),--local-s3,--input-bucket "$(INPUT_BUCKET)" --output-bucket "$(OUTPUT_BUCKET)") \
	  $(if $(INVOKE),--invoke $(INVOKE))
