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

# The browser tests drive Debian's Chromium: installed here when missing (as root, or with sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

.PHONY: install dev run test lint chromium screenshots
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

test: lint chromium
	$(BIN)/pytest -q

# The README's screenshots: the browser tests save one per view into docs/img.
screenshots: dev chromium
	DISPATCHER_SCREENSHOTS=docs/img $(BIN)/pytest -q -p no:randomly tests/browser
