# lazarus — two commands: `make run` and `make test` (and `make lint`, which CI runs first).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test setup openblas models bench lint clean screenshots

run: setup models
	$(BIN)/lazarus

# Two pytest-xdist workers (TEST_WORKERS=0 runs in one process); the timing tests run alone after.
TEST_WORKERS ?= 2
test: setup models
	$(BIN)/python -m pytest -q -m "not alone" $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup)
	$(BIN)/python -m pytest -q -m alone

setup: $(STAMP) openblas

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# Fast MLX on Linux CPU needs an optimized BLAS (see docs/models.md and `lazarus --batch doctor`).
openblas:
	@if [ "$$(uname -s)" = Linux ] && command -v apt-get >/dev/null && \
	   ! ldconfig -p 2>/dev/null | grep -q 'libopenblas.so.0'; then \
	  echo "installing OpenBLAS (libopenblas0-pthread) with apt-get"; \
	  $(SUDO) apt-get install -y -q libopenblas0-pthread >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q libopenblas0-pthread >/dev/null; } || \
	  echo "warning: could not install OpenBLAS; MLX will use the slow reference BLAS"; \
	fi

# The bundled models: the default (SmolLM2) and Gemma 3 270M, which the tests use.
models: $(STAMP)
	$(BIN)/lazarus --batch models pull smollm2-135m gemma3-270m

# lazarus vs the PyTorch peers (transformers, nnsight), side by side; see docs/PERFORMANCE.md.
bench: setup models
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/run_all.py

# ruff (rules in pyproject.toml: E, F, I, B, UP) and mypy (engine/, strict on models and results)
lint: setup
	$(BIN)/python -m ruff check engine lazarus_tui tests bench scripts
	$(BIN)/python -m mypy

screenshots: setup models
	$(BIN)/python scripts/screenshots.py

clean:
	rm -rf $(VENV) *.egg-info
