# Portcullis — two commands on a fresh Debian machine with Python 3.11:
#   make run    install what is needed, then start the gateway on its embedded default
#   make test   install what is needed, then run the whole suite (ruff, mypy --strict, unit, security,
#               fuzz, end-to-end, conformance)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pytest-xdist workers for `make test`: a fixed count, not -n auto (the machine's core count), so CI load
# does not grow with the machine; most tests wait on child processes, so it may exceed the cores
# (docs/decisions.md, "Parallel tests"). `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= 3

.PHONY: run test install lint bench clean

$(STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/portcullis serve

lint: install
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/mypy

test: install
	bash scripts/install-node-tools.sh
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/mypy
	$(BIN)/python -m pytest -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup --durations=30

bench: install
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .tools .pytest_cache
