# One virtualenv for development (everything, torch CPU build) and a slim one for serving.
PYTHON ?= python3
VENV ?= .venv
SERVE_VENV ?= .venv-serve
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: setup setup-serve test lint serve default-model bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[serve,train,dev]'
	touch $@

setup-serve: $(SERVE_VENV)/.installed

$(SERVE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SERVE_VENV)/bin/python -m pip install --quiet -e '.[serve]'
	touch $@

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

serve: setup-serve
	$(SERVE_VENV)/bin/arinext serve --host $(HOST) --port $(PORT)

bench: setup
	$(PY) benchmarks/frontend_speed.py
	$(PY) benchmarks/model_speed.py

clean:
	rm -rf $(VENV) $(SERVE_VENV) build *.egg-info .pytest_cache .ruff_cache
