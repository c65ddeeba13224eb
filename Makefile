# Quick start: `make train` trains the default experiment, `make test` runs the tests.
# Both create .venv and install dlcourse (with its dev and sweep extras) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train test test-slurm lint format benchmark gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e ".[dev,sweep,mlflow,export]"
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/dlcourse-train $(ARGS)

test: $(STAMP)
	$(BIN)/pytest -m "not benchmark and not slurm" -n 2 --dist loadfile $(ARGS)

# launcher=slurm against a real SLURM cluster (tests/test_slurm.py; skipped without one). For a
# one-machine cluster here, as root: bash .ci/slurm/start.sh (.ci/run does it).
test-slurm: $(STAMP)
	$(BIN)/pytest -m slurm $(ARGS)

# ruff's formatter and linter (settings in pyproject.toml); `make format` rewrites in place.
lint: $(STAMP)
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/ruff check src tests scripts

format: $(STAMP)
	$(BIN)/ruff format src tests scripts
	$(BIN)/ruff check --fix src tests scripts

benchmark: $(STAMP)
	$(BIN)/python scripts/benchmark_presets.py $(ARGS)

# On a CUDA GPU: the GPU path proven and timed, into docs/benchmarks.md (issue #17). It uses
# .venv where there is one, else the machine's python3 with src/ on its path (a lent GPU
# machine has torch but no network to install into a venv).
gpu-check:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,PYTHONPATH=src:$$PYTHONPATH python3) scripts/gpu_check.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
