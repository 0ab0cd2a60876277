# Two entry points, each sets everything up first:  make demo  |  make test
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup system venv demo test bench clean

setup: system venv

system:
	bash scripts/setup-system.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/mtl-edge demo

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/features.py
	$(BIN)/python benchmarks/demo_corpus.py
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
