# One entry point for everything CI and a new user do. Every target depends on the venv,
# so `make test` or `make demo` work as the very first command on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# `test-fast`: unit tests and small simulator tests (tests/conftest.py SLOW_PATHS), for the
# edit-test loop; `test` is the full suite, which CI runs.
.PHONY: install test test-fast lint typecheck check demo bench chaos clean

# `make install` is what running needs (what a real portal's user installs); the test and lint
# tools come with the first `make test`/`make check` (DEV_STAMP).
DEV_STAMP := $(VENV)/.dev-installed

# An editable install leaves our own modules uncompiled; with PYTHONDONTWRITEBYTECODE set (as on
# some CI images) every `deal-export` process would compile each module it imports again (~4 ms
# each). The venv's stamp only follows pyproject.toml, so `make install` also refreshes the
# bytecode of whatever changed since, every time (compileall skips current files: ~0.1 s).
install: $(STAMP)
	$(BIN)/python -m compileall -q pipeline

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	$(BIN)/python -m compileall -q pipeline
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

# The suite runs on every core (at most 4 workers): most tests wait on a simulator, a CLI
# subprocess or S3, and one process left the second core idle (about 13 minutes on 2 cores, too
# close to CI's limit). `loadgroup` keeps the tests that share one expensive module fixture
# (the chaos suite) on one worker, so that fixture runs once.
XDIST := -n auto --maxprocesses 4 --dist loadgroup

test: $(DEV_STAMP)
	$(BIN)/pytest -q $(XDIST)

test-fast: $(DEV_STAMP)
	$(BIN)/pytest -q $(XDIST) -m "not slow"

lint: $(DEV_STAMP)
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/ruff format --check pipeline tests bench

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

check: lint typecheck test

demo: $(STAMP)
	$(BIN)/python -m pipeline.demo

BENCH_STAMP := $(VENV)/.bench-installed

# The peer library the comparison benchmark measures against; not needed for anything else.
$(BENCH_STAMP): $(DEV_STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

chaos: $(DEV_STAMP)
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
