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

# For trying dispatcher on this machine: webhooks may also go to http:// receivers on it (127.0.0.0/8).
run: install
	DISPATCHER_ALLOW_HTTP_CALLBACKS=$${DISPATCHER_ALLOW_HTTP_CALLBACKS:-true} \
	DISPATCHER_ALLOWED_NETWORKS=$${DISPATCHER_ALLOWED_NETWORKS:-127.0.0.0/8} $(BIN)/dispatcher serve

lint: dev
	$(BIN)/ruff check dispatcher tests bench
	$(BIN)/ruff format --check dispatcher tests bench
	$(BIN)/mypy dispatcher

test: lint
	$(BIN)/pytest -q
