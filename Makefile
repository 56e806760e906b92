# Two entry points: `make demo` (the main job) and `make test` (the whole test suite);
# `make test-fast` skips the tests marked slow; `make docs` builds the user guide.
# Both create .venv and install everything on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench clean docs

install: $(STAMP)

# torch is pinned here (the CPU build on this machine's disk); pyproject stays permissive.
# --no-compile: no bytecode for the ~14,000 installed .py files (torch alone: 10 s of CPU);
# Python compiles the few it imports on first use.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-compile --upgrade pip
	$(BIN)/pip install -q --no-compile -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q --no-compile -c constraints.txt -e ".[test,docs]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m benchmark.demo --out demo-output

test: $(STAMP)
	$(BIN)/ruff check simgen models benchmark tests scripts
	AET_PROGRESS=0 $(BIN)/python -m pytest -q -x --durations=15

# The minute-scale loop: everything but the tests marked slow (abTEM multislice, Dask clusters,
# SIGKILL, training, aet-bench speed, end-to-end generation).
test-fast: $(STAMP)
	$(BIN)/ruff check simgen models benchmark tests scripts
	AET_PROGRESS=0 $(BIN)/python -m pytest -q -x -m "not slow" --durations=15

lint: $(STAMP)
	$(BIN)/ruff check simgen models benchmark tests

bench: $(STAMP)
	$(BIN)/aet-bench speed

clean:
	rm -rf $(VENV) demo-output

# The user guide (Sphinx + MyST, the docs extra): docs/_build/html, warnings are errors.
# make test runs the same build (tests/test_docs_build.py, marked slow).
docs: $(STAMP)
	AET_PROGRESS=0 $(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
