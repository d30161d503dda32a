# The two commands of the README: `make demo` and `make test`. Both set up what they need first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Tesseract is 2.7x faster on small machines with one thread per process (we run one process per core).
export OMP_THREAD_LIMIT ?= 1

.PHONY: setup system-packages demo test test-fast lint serve bench clean

setup: system-packages $(VENV)/.installed

system-packages:
	@scripts/install-system-packages.sh

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c "import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else \"Python 3.11 is required\")"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

demo: setup
	$(BIN)/imago demo samples

# Two workers: the tests that start whole services run one after another on one of them (tests/conftest.py).
test: setup lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup

test-fast: setup lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m "not slow"

# The import rules (the core imports no framework, nothing imports upward), style and likely bugs, the core's types.
lint: setup
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/mypy

# Retraining needs a base training set and a fixed validation set: the baseline's own (training/sets, which
# reads the shared data), when the shared data is there.
SHARED_DATA := $(abspath ../shared/data)
serve: setup
	@if [ -d "$(SHARED_DATA)/catsdogs/train" ]; then \
	  export IMAGO_TRAINING_DATA=$${IMAGO_TRAINING_DATA:-$(CURDIR)/training/sets/train.csv} IMAGO_VALIDATION_DATA=$${IMAGO_VALIDATION_DATA:-$(CURDIR)/training/sets/validation.csv}; fi; \
	exec $(BIN)/imago serve

bench: setup
	$(BIN)/python bench/ingest.py

clean:
	rm -rf .imago
