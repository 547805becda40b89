# Two commands on a fresh machine: `make demo` (set up .venv, run the main job) and `make test` (set up, test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-jax test-slow test-all lint clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/emzoo list
	$(BIN)/emzoo demo --out demo_out

lint: $(STAMP)
	$(BIN)/ruff check emzoo tests benchmarks

test: $(STAMP) lint
	$(BIN)/python -m pytest -m "not slow" -q -p no:cacheprovider --doctest-modules emzoo tests
	$(MAKE) --no-print-directory test-jax

# The JAX pass (Keras fixes its backend per process): the layer tests, and tests/backends, where weights
# saved by TensorFlow load under JAX and agree within 1e-4. EMZOO_TEST_BACKEND makes a pass that silently ran
# on TensorFlow fail. JAX compiles every new op and initialiser shape with XLA; LLVM at -O0 makes those
# compiles about 2.5x faster.
JAX_ENV := KERAS_BACKEND=jax EMZOO_TEST_BACKEND=jax JAX_PLATFORMS=cpu \
           XLA_FLAGS=--xla_backend_optimization_level=0
test-jax: $(STAMP)
	$(JAX_ENV) $(BIN)/python -m pytest -m "not slow" -q -p no:cacheprovider tests/layers tests/backends

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q -p no:cacheprovider

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --doctest-modules emzoo tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
