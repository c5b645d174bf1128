# tinygru: one target per job, used the same way by people and CI.
# `make help` lists them.
# make demo prunes the activity model only: at 75% the anomaly forecaster kept
# its hit but lost most of its margin (7.1 -> 2.5), see the quantize notes.

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

.PHONY: help setup demo test test-fast lint format bench firmware fuzz pi-smoke clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: TASK=har|anomaly|all (demo, bench), DATA=file.npz|file.csv (demo, bring-your-own),"
	@echo "             SWEEP=0,0.5,0.75,0.9 (demo: also plot accuracy vs sparsity)"

setup: ## create .venv from pinned requirements and install Debian packages when missing
	@scripts/ensure-debian.sh
	@scripts/ensure-venv.sh

demo: setup ## train, prune, quantize, check and export the default tasks; TASK=har|anomaly narrows it
	@for t in $(TASKS); do \
	  b=$(BUILD)/$$t; \
	  echo "== $$t: train"; \
	  $(PY) -m train --config configs/$$t.toml --out $$b $(if $(DATA),--data $(DATA)) || exit 1; \
	  if [ "$$t" = har ]; then \
	    echo "== $$t: prune"; \
	    $(PY) -m quantize prune --bundle $$b --sparsity 0.75 --granularity block4 $(if $(SWEEP),--sweep $(SWEEP)) $(if $(DATA),--data $(DATA)) || exit 1; \
	  fi; \
	  echo "== $$t: int8"; \
	  $(PY) -m quantize int8 --bundle $$b $(if $(DATA),--data $(DATA)) || exit 1; \
	  echo "== $$t: host parity"; \
	  $(PY) -m quantize check --bundle $$b || exit 1; \
	  echo "== $$t: export"; \
	  $(PY) -m firmware_export --bundle $$b || exit 1; \
	  echo "== $$t: engine vs TFLM"; \
	  $(PY) -m firmware_export check --bundle $$b || exit 1; \
	done
	@$(PY) -m edge_runtime.summary $(addprefix $(BUILD)/,$(TASKS))

test: setup ## run the test suite (what CI runs)
	@$(PY) -m pytest -q

test-fast: setup ## run the fast tier only
	@$(PY) -m pytest -q -m "not slow"

lint: setup ## ruff on all Python
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .

format: setup ## apply ruff formatting
	@.venv/bin/ruff format .

bench: setup ## figures: stage reports, host µs per step (LiteRT), instructions per step under QEMU
	@$(PY) -m edge_runtime.summary $(addprefix $(BUILD)/,$(TASKS))
	@for t in $(TASKS); do \
	  echo "== $$t: edge runtime on this host (LiteRT)"; \
	  $(PY) -m edge_runtime bench --bundle $(BUILD)/$$t --json $(BUILD)/$$t/reports/bench.json || exit 1; \
	  echo "== $$t: C engine on Cortex-M4 and M3 (QEMU -icount: instructions, not cycles)"; \
	  for m in m4 m3; do $(PY) -m firmware_export qemu --bundle $(BUILD)/$$t --target $$m --windows 20 || exit 1; done; \
	done

firmware: setup ## build the reference firmware (MPS2 AN385/AN386/AN500, -Os/-O2) for the bundles in build/
	@for t in $(TASKS); do \
	  $(PY) -m firmware_export --bundle $(BUILD)/$$t > /dev/null || exit 1; \
	  $(MAKE) --no-print-directory -C firmware BUNDLE=$(abspath $(BUILD))/$$t || exit 1; \
	done

fuzz: setup ## libFuzzer on the device-protocol parser (FUZZ_SECONDS=60)
	@$(MAKE) --no-print-directory -C firmware fuzz FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60)

pi-smoke: ## install edge_runtime in an emulated arm64 Debian (a Pi userland) and check a bundle there; BUNDLE=build/har
	@scripts/pi-smoke.sh $(or $(BUNDLE),$(BUILD)/har)

clean: ## remove build outputs (keeps .venv)
	rm -rf --one-file-system $(BUILD) .pytest_cache .ruff_cache
