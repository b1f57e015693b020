# Hookflow: the two commands a newcomer needs are `make run` and `make test`.
# Both set up what they need first (a .venv from requirements, Azurite from npm).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_PY := $(VENV)/.installed
STAMP_NODE := node_modules/.installed

.PHONY: run test lint bench setup clean help

help:
	@echo "make run    start Azurite (in memory) and the app at http://127.0.0.1:$${PORT:-7071}/api"
	@echo "make test   lint, type-check and run the whole test suite"
	@echo "make bench  run the benchmarks and print their figures"

setup: $(STAMP_PY) $(STAMP_NODE)

$(STAMP_PY): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

$(STAMP_NODE): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

run: setup
	$(PY) -m scripts.run_local

lint: $(STAMP_PY)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: setup lint
	$(PY) -m pytest

bench: setup
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
