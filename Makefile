# lightning_sdc — `make help` lists the targets.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# one pytest worker per core (pytest-xdist); each test runs torch on one thread (tests/conftest.py)
WORKERS ?= auto

.PHONY: help install demo test test-all test-gpu bench lint format figures reproduce clean

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package with its dev extras

demo: $(STAMP)  ## distill real bundled MNIST (mnist5k) on the CPU; print accuracy with and without SDC
	$(BIN)/lightning-sdc demo

test: $(STAMP)  ## fast test suite (CPU, < 15 min; one worker per core)
	$(BIN)/python -m pytest -q -n $(WORKERS) $(PYTEST_ARGS)

test-all: $(STAMP)  ## every CPU test, including @slow
	$(BIN)/python -m pytest -q -n $(WORKERS) -m "not cuda" $(PYTEST_ARGS)

test-gpu: $(STAMP)  ## the GPU check (<= 10 min): CUDA tests, quick CUDA bench, DC precisions, MTT memory -> benchmarks/GPU_CHECK.md
	$(BIN)/python -m benchmarks.gpu_check --device cuda

bench: $(STAMP)  ## benchmarks: ratios measured in one run, written to benchmarks/RESULTS.md
	$(BIN)/python -m benchmarks

figures: $(STAMP)  ## theory figures 4a/4b/4c/15 into docs/figures
	for f in 4a 4b 4c 15; do $(BIN)/lightning-sdc theory --figure $$f --out docs/figures || exit 1; done

reproduce: $(STAMP)  ## run a reproduction grid (GRID=fmnist-cpu by default)
	$(BIN)/lightning-sdc reproduce --grid $${GRID:-fmnist-cpu}

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check lightning_sdc tests benchmarks

format: $(STAMP)  ## ruff format + fixes
	$(BIN)/ruff format lightning_sdc tests benchmarks && $(BIN)/ruff check --fix lightning_sdc tests benchmarks

clean:  ## remove build artefacts and logs
	rm -rf build dist *.egg-info lightning_logs .pytest_cache
