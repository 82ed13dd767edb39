# The two set-up commands: `make gate` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.onnx-gate-installed
TEST_STAMP := $(VENV)/.onnx-gate-test-installed
PYTEST_ARGS ?=

.PHONY: gate test test-slow install clean

install: $(STAMP)

# torch is pinned first: 2.13.0 is a local CPU wheel; an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
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

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

test: $(TEST_STAMP)
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

# End-to-end runs that make test skips (e.g. publishing a candidate against the real servers).
test-slow: $(TEST_STAMP)
	ONNX_GATE_SLOW_TESTS=1 $(BIN)/python -m pytest tests -m slow $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .stack build *.egg-info
