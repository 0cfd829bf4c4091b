# Two-command quickstart: `make demo` and `make test` set up .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION := 2.13.0

.PHONY: demo test lint docs clean-venv

# The stamp files record a finished install, so a ready .venv is never reinstalled.
$(VENV)/.base-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.base-installed
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.base-installed
	$(PY) -m sae_lens.demo

test: $(VENV)/.dev-installed
	$(PY) -m pytest -q

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check sae_lens tests scripts benchmark
	$(VENV)/bin/ruff format --check sae_lens tests scripts benchmark

docs: $(VENV)/.dev-installed
	$(VENV)/bin/mkdocs build --strict

clean-venv:
	rm -rf $(VENV)
