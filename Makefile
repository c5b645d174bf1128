# tinygru: one target per job, used the same way by people and CI.
# `make help` lists them.
# make demo prunes the activity model only (the sparsest point within the config's
# [prune] max_val_drop and the target's flash): at 75% the anomaly forecaster kept
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

.PHONY: help setup demo search test test-fast lint format bench firmware fuzz pi-smoke readme clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: TASK=har|anomaly|all (demo, bench), DATA=file.npz|file.csv (demo, bring-your-own),"
	@echo "             TARGET=configs/targets/NAME.toml (demo: the chip: clock and flash/RAM budgets that prune,"
	@echo "             export and engine hold the model to, time per step in the report; default cortex-m4-80mhz),"
	@echo "             CONFIG=configs/byo/NAME.toml (demo: the task's config, default configs/TASK.toml),"
	@echo "             SWEEP=0,0.5,0.75,0.9 (demo: sparsities har may deploy, sparsest within budget; none = dense),"
	@echo "             FORCE=1 (demo: ignore the stage cache), ONLY=stage (demo: run one stage, e.g. ONLY=int8)"
	@echo "             CONFIG=, TARGET=, TRIALS=, STORAGE=postgresql://..., STUDY=, RESUME=1, SEARCH_ARGS= (search)"

setup: ## create .venv from pinned requirements and install Debian packages when missing
	@scripts/ensure-debian.sh
	@scripts/ensure-venv.sh

demo: setup ## every stage per task (train, prune, qat when [qat] enabled, int8, parity, export, engine, firmware, mcu, check), then the report; cached per stage
	@$(PY) -m pipeline demo --task $(TASK) --build $(BUILD) $(if $(DATA),--data $(DATA)) $(if $(TARGET),--target $(TARGET)) $(if $(CONFIG),--config $(CONFIG)) $(if $(SWEEP),--sweep $(SWEEP)) $(if $(filter 1 yes true,$(FORCE)),--force) $(if $(ONLY),--only $(ONLY))

search: setup ## the best GRU for a chip on validation (Optuna; docs/search.md): CONFIG, TARGET, TRIALS
	@$(PY) -m search --config $(or $(CONFIG),configs/har.toml) \
	  --target $(or $(TARGET),configs/targets/cortex-m4-80mhz.toml) --trials $(or $(TRIALS),40) \
	  --build $(BUILD) $(if $(STORAGE),--storage $(STORAGE)) $(if $(STUDY),--study $(STUDY)) \
	  $(if $(filter 1 yes true,$(RESUME)),--resume) $(SEARCH_ARGS)

test: setup ## run the test suite (what CI runs)
	@$(PY) -m pytest -q

test-fast: setup ## run the fast tier only
	@$(PY) -m pytest -q -m "not slow"

# The hand-written C (engine, firmware, fuzz harness); the generated C of an export is
# not formatted. Layout: .clang-format.
C_SOURCES = $(sort $(shell find firmware firmware_export/engine tests/fuzz -name '*.[ch]'))
CLANG_FORMAT := clang-format

lint: setup ## ruff on all Python, clang-format on the hand-written C (every check runs; any failure fails)
	@status=0; \
	.venv/bin/ruff check . || status=1; \
	.venv/bin/ruff format --check . || status=1; \
	if ! command -v $(CLANG_FORMAT) > /dev/null; then \
	  echo "lint: $(CLANG_FORMAT) not found (Debian: clang-format, see debian-packages.txt)" >&2; status=1; \
	elif $(CLANG_FORMAT) --dry-run -Werror $(C_SOURCES); then \
	  echo "clang-format: $(words $(C_SOURCES)) C files formatted as .clang-format says"; \
	else status=1; fi; \
	exit $$status

format: setup ## apply ruff formatting and clang-format to the hand-written C
	@.venv/bin/ruff format .
	@$(CLANG_FORMAT) -i $(C_SOURCES)

bench: setup ## stage figures, then per task one run -> reports/bench.json + .md: instr/step and /MAC on every QEMU board (M0/M3/M4/M7/M33/M55/STM32F405), estimated cycles and ms/step, host µs/step, bytes and RAM per route
	@$(PY) -m edge_runtime.summary $(addprefix $(BUILD)/,$(TASKS))
	@for t in $(TASKS); do \
	  echo "== $$t: bench (QEMU -icount: instructions, not cycles)"; \
	  $(PY) -m pipeline.bench --bundle $(BUILD)/$$t || exit 1; \
	done

firmware: setup ## build the DUT firmware (every board of edge_runtime/boards.py, -Os/-O2) for the bundles in build/
	@for t in $(TASKS); do \
	  $(PY) -m firmware_export --bundle $(BUILD)/$$t > /dev/null || exit 1; \
	  $(MAKE) --no-print-directory -C firmware BUNDLE=$(abspath $(BUILD))/$$t || exit 1; \
	done

fuzz: setup ## libFuzzer on the device-protocol parser (FUZZ_SECONDS=60)
	@$(MAKE) --no-print-directory -C firmware fuzz FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60)

pi-smoke: ## install edge_runtime in an emulated arm64 Debian (a Pi userland) and check a bundle there; BUNDLE=build/har
	@scripts/pi-smoke.sh $(or $(BUNDLE),$(BUILD)/har)

readme: setup ## regenerate README.md's results table from build/reports/report.json
	@$(PY) -m report readme --from $(BUILD)/reports/report.json --readme README.md

clean: ## remove build outputs (keeps .venv)
	rm -rf --one-file-system $(BUILD) .pytest_cache .ruff_cache
