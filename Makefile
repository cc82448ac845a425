# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

# What running needs: dispatcher and its runtime dependencies.
$(BIN)/dispatcher: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

# What testing, linting and the benchmarks need besides.
$(VENV)/.test-tools: $(BIN)/dispatcher
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

.PHONY: install dev run test lint
install: $(BIN)/dispatcher

dev: $(VENV)/.test-tools

run: install
	$(BIN)/dispatcher serve

lint: dev
	$(BIN)/ruff check dispatcher tests bench
	$(BIN)/ruff format --check dispatcher tests bench
	$(BIN)/mypy dispatcher

test: lint
	$(BIN)/pytest -q
