# The two commands a new machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_ARGS ?=

.PHONY: demo test test-quick lint bench install install-dev clean

# pip's own notices (running as root, a newer pip) are not about segmatch: kept off the terminal.
PIP := $(BIN)/python -m pip --disable-pip-version-check
PIP_INSTALL := $(PIP) install --quiet --root-user-action=ignore

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip

install: $(BIN)/python
	$(PIP_INSTALL) -e .

install-dev: $(BIN)/python
	$(PIP_INSTALL) -e ".[dev]"

## demo: install, generate 100,000 synthetic customers, run the whole pipeline, show the summary
demo: install
	$(BIN)/segmatch demo $(DEMO_ARGS)

## bench: the benchmark report (100k, 1M, 5M customers, matching at 1M, 10M scale run; ~25 min)
bench: install-dev
	$(BIN)/python -m benchmarks

## lint: ruff, formatting, the import-layer contracts of DESIGN.md, and the type checker
lint: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy

## test: install, lint, and run the whole test suite
test: lint
	$(BIN)/python -m pytest

## test-quick: the local-engine tests only (no Spark, none of the slow ones), for a daily loop
test-quick: install-dev
	$(BIN)/python -m pytest -q -m "not spark and not slow"

clean:
	rm -rf segmatch-demo segmatch-out .pytest_cache .ruff_cache
