# tinygru: one target per job, used the same way by people and CI.
# `make help` lists them.

SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONHASHSEED := 0
export TF_CPP_MIN_LOG_LEVEL := 3
export TF_ENABLE_ONEDNN_OPTS := 0
export PYTHONDONTWRITEBYTECODE := 1
export PYTHONUNBUFFERED := 1

TASK ?= all
BUILD ?= build
ifeq ($(TASK),all)
TASKS := har anomaly
else
TASKS := $(TASK)
endif

.PHONY: help setup demo test test-fast lint format bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: TASK=har|anomaly|all (demo, bench), DATA=file.npz|file.csv (demo, bring-your-own)"

setup: ## create .venv from pinned requirements and install Debian packages when missing
	@scripts/ensure-debian.sh
	@scripts/ensure-venv.sh

demo: setup ## train (and later quantize, export, run) the default tasks end to end; TASK=har|anomaly narrows it
	@for t in $(TASKS); do \
	  $(PY) -m train --config configs/$$t.toml --out $(BUILD)/$$t $(if $(DATA),--data $(DATA)) || exit 1; \
	done
	@$(PY) -m train summary $(addprefix $(BUILD)/,$(TASKS))

test: setup ## run the test suite (what CI runs)
	@$(PY) -m pytest -q

test-fast: setup ## run the fast tier only
	@$(PY) -m pytest -q -m "not slow"

lint: setup ## ruff on all Python
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .

format: setup ## apply ruff formatting
	@.venv/bin/ruff format .

bench: setup ## print the figures each stage measured for the bundles in build/
	@$(PY) -m train bench $(addprefix $(BUILD)/,$(TASKS))

clean: ## remove build outputs (keeps .venv)
	rm -rf $(BUILD) .pytest_cache .ruff_cache
