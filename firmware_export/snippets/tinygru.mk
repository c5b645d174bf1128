# tinygru.mk: build a tinygru model into a firmware with GNU Make.
#
#   TINYGRU_BUNDLE := models/har          # bundle folder (step_int8.tflite, manifest.json)
#   TINYGRU_PREFIX := har                 # C symbol prefix of the model files
#   include path/to/tinygru/firmware_export/snippets/tinygru.mk
#   CFLAGS += $(TINYGRU_CFLAGS)
#   firmware.elf: main.o $(TINYGRU_SRCS:.c=.o)
#
# Optional: TINYGRU_OUT (export folder, default $(TINYGRU_BUNDLE)/firmware),
# TINYGRU_PYTHON (default python3), TINYGRU_EXPORT_FLAGS (e.g. --sparse auto
# --max-flash 65536).
#
# The export is re-run when the bundle's step_int8.tflite or manifest.json, or an
# engine source of this checkout, is newer than $(TINYGRU_STAMP).
#
# Defines: TINYGRU_SRCS (engine and model .c files), TINYGRU_HDRS, TINYGRU_INC
# (include folders), TINYGRU_CFLAGS (-I flags), TINYGRU_STAMP.

ifndef TINYGRU_BUNDLE
$(error tinygru.mk: set TINYGRU_BUNDLE to the bundle folder before the include)
endif
ifndef TINYGRU_PREFIX
$(error tinygru.mk: set TINYGRU_PREFIX to the model's C symbol prefix before the include)
endif

TINYGRU_ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))../..)
TINYGRU_OUT ?= $(TINYGRU_BUNDLE)/firmware
TINYGRU_PYTHON ?= python3
TINYGRU_EXPORT_FLAGS ?=

TINYGRU_ENGINE_SRC := $(sort $(wildcard $(TINYGRU_ROOT)/firmware_export/engine/*.[ch]))
TINYGRU_ENGINE := $(patsubst $(TINYGRU_ROOT)/firmware_export/engine/%,$(TINYGRU_OUT)/engine/%,$(TINYGRU_ENGINE_SRC))
TINYGRU_SRCS := $(filter %.c,$(TINYGRU_ENGINE)) $(TINYGRU_OUT)/$(TINYGRU_PREFIX)_model.c
TINYGRU_HDRS := $(filter %.h,$(TINYGRU_ENGINE)) $(TINYGRU_OUT)/$(TINYGRU_PREFIX)_model.h \
                $(TINYGRU_OUT)/$(TINYGRU_PREFIX)_config.h
TINYGRU_INC := $(TINYGRU_OUT) $(TINYGRU_OUT)/engine
TINYGRU_CFLAGS := $(addprefix -I,$(TINYGRU_INC))
TINYGRU_STAMP := $(TINYGRU_OUT)/.tinygru.stamp

$(TINYGRU_STAMP): $(TINYGRU_BUNDLE)/step_int8.tflite $(TINYGRU_BUNDLE)/manifest.json $(TINYGRU_ENGINE_SRC)
	PYTHONPATH="$(TINYGRU_ROOT)$(if $(PYTHONPATH),:$(PYTHONPATH))" $(TINYGRU_PYTHON) -m firmware_export \
	  --bundle $(TINYGRU_BUNDLE) --out $(TINYGRU_OUT) --prefix $(TINYGRU_PREFIX) $(TINYGRU_EXPORT_FLAGS)
	touch $@ $(TINYGRU_SRCS) $(TINYGRU_HDRS)

$(TINYGRU_SRCS) $(TINYGRU_HDRS): $(TINYGRU_STAMP) ;
