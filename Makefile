# Two commands on a fresh machine: `make demo` (set up .venv, run the main job) and `make test` (set up, test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-slow test-all lint clean

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

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q -p no:cacheprovider

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --doctest-modules emzoo tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
