# Two commands do all the set-up on a fresh machine (Python 3.11, Java 17, Maven):
#   make demo   - the whole loop on a local Kafka: worker, simulated fleet, live revocations
#   make test   - lint, type check and the full test suite (starts its own Kafka)
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/intentwatch demo

test: lint
	$(BIN)/python -m pytest

test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -m "not kafka"

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(BIN)/.installed
	$(BIN)/python -m bench.quality
	$(BIN)/python -m bench.throughput

clean:
	rm -rf $(VENV) .intentwatch .pytest_cache .ruff_cache
