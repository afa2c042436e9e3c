# esmd developer entry points. `make demo` and `make test` work on a fresh machine: they
# create the venv, fetch and start the local servers (Kafka from Maven Central, moto_server
# from PyPI), then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv services services-down lint test unit demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

services: venv
	$(BIN)/python scripts/services.py up

services-down:
	$(PYTHON) scripts/services.py down

lint: venv
	$(BIN)/ruff check service tests benchmarks
	$(BIN)/mypy

test: lint services
	$(BIN)/pytest

unit: venv
	$(BIN)/pytest tests/unit

demo: services
	$(BIN)/esmd demo

bench: services
	$(BIN)/python benchmarks/kafka_throughput.py

clean: services-down
	rm -rf $(VENV) .services .pytest_cache .mypy_cache .ruff_cache
