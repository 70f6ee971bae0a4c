# The two commands of the README's quick start, and what they stand on.
#   make serve  - install into .venv and serve the Label Studio backend on :9090
#   make test   - install into .venv and run the whole test suite
#   make demo   - install into .venv and run a first prediction (writes demo-output/overlay.png)
#   make test-fast - the unit tests only: no Label Studio, browser, containers or slow tests (about 2 min)
#   make lint   - ruff (lint, import order, format check) and mypy, configured in pyproject.toml
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: install serve demo test test-fast lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

serve: install
	$(VENV)/bin/dextr-backend serve

demo: install
	$(VENV)/bin/dextr-backend demo --out demo-output

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not labelstudio and not browser and not containers and not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/latency.py
	$(PY) benchmarks/latency.py --engines

clean:
	rm -rf $(VENV) demo-output .pytest_cache
