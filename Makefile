# Two commands on a fresh machine:
#   make demo   set up .venv (when needed) and run the main job
#   make test   set up .venv (when needed) and run the tests
# The install is skipped when pyproject.toml and constraints.txt are unchanged
# since the last successful install (a stamp named by their hash).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEPS_HASH := $(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(DEPS_HASH)

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]' -c constraints.txt
	rm -f $(VENV)/.installed-*
	touch $@

demo: setup
	$(BIN)/gemlab train experiment=quickstart

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check platform tests
	$(BIN)/ruff format --check platform tests

bench: setup
	OMP_WAIT_POLICY=PASSIVE $(BIN)/gemlab bench plan

clean:
	rm -rf $(VENV) build *.egg-info
