# Two commands do all the set-up on a fresh machine (Python 3.11, Java 17, Maven, Go 1.26):
#   make demo   - the whole loop on a local Kafka: worker, simulated fleet, live revocations
#   make test   - lint, type check and the full test suite (starts its own Kafka)
#   make notebooks - JupyterLab (the `notebooks` extra) on notebooks/
#   make lock   - re-pin the container image's dependencies (docker/worker-requirements.txt)
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: demo test test-fast lint bench notebooks lock clean prometheus collector

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/intentwatch demo

test: lint prometheus collector
	$(BIN)/python -m pytest

test-fast: $(BIN)/.installed prometheus
	$(BIN)/python -m pytest -m "not kafka"

# Prometheus and promtool for the metrics tests: Debian's package, installed when missing.
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

# The OpenTelemetry Collector the tests run: built with Go on first use (minutes), then cached.
collector: $(BIN)/.installed
	$(BIN)/python -m intentwatch.local.otelcol build

notebooks: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e ".[notebooks]"
	$(BIN)/jupyter lab notebooks/

lock: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --all-build-deps --allow-unsafe --extra=worker --generate-hashes \
		--no-emit-find-links --no-emit-index-url --strip-extras \
		--output-file=docker/worker-requirements.txt pyproject.toml

bench: $(BIN)/.installed
	$(BIN)/python -m bench.quality
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.memory

clean:
	rm -rf $(VENV) .intentwatch .pytest_cache .ruff_cache
