# Quickstart targets: `make demo` runs the main job, `make test` the checks. Both set up first.
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test lint format

setup:
	@./scripts/setup.sh

demo: setup
	$(BIN)/lorakit train

test: setup
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

format: setup
	$(BIN)/ruff check --fix src tests
