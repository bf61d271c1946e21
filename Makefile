# Two entry points a fresh machine needs: `make serve` and `make test`.
# Each creates its own virtualenv in .venv and installs the project into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   ?= .venv
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=

.PHONY: serve test lint bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --upgrade pip setuptools wheel

# durable-rules ships only as an sdist: the install compiles C (gcc and the Python headers).
$(VENV)/.installed: $(VENV)/bin/python setup.cfg pyproject.toml
	$(VENV)/bin/python -m pip install -e '.[postgres,redis,server]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(VENV)/bin/python -m pip install -e '.[test,postgres,redis,server]'
	touch $@

serve: $(VENV)/.installed
	$(VENV)/bin/ladder serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check plugin adapters tests bench

bench: $(VENV)/.installed-test
	$(VENV)/bin/python -m pip install -e '.[bench]'
	$(VENV)/bin/python bench/engine.py
	$(VENV)/bin/python bench/ladder.py
	$(VENV)/bin/python bench/backtest.py

clean:
	rm -rf $(VENV) build dist *.egg-info ladder.db ladder.db-* ladder-queue.db*
