# Quick start: `make train` trains the default experiment, `make test` runs the tests.
# Both create .venv and install dlcourse (with its dev and sweep extras) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train test benchmark clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e ".[dev,sweep]"
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/dlcourse-train $(ARGS)

test: $(STAMP)
	$(BIN)/pytest -m "not benchmark" $(ARGS)

benchmark: $(STAMP)
	$(BIN)/python scripts/benchmark_presets.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
