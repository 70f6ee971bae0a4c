# The two commands of the README's quick start, and what they stand on.
#   make serve  - install into .venv and serve the Label Studio backend on :9090
#   make test   - install into .venv and run the whole test suite
#   make demo   - install into .venv and run a first prediction (writes demo-output/overlay.png)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: install serve demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py
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

bench: install
	$(PY) benchmarks/latency.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
