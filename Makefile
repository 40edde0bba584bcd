# Portcullis — two commands on a fresh Debian machine with Python 3.11:
#   make run    install what is needed, then start the gateway on its embedded default
#   make test   install what is needed, then run the whole suite (ruff, mypy --strict, unit, security,
#               fuzz, end-to-end, conformance)
#   make sbom   the CycloneDX SBOM of the runtime dependencies (dist/portcullis.cdx.json, docs/release.md)
#   make release  the SBOM, the wheel, build.json and SHA256SUMS in dist/ (then sign: docs/release.md)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pytest-xdist workers for `make test`: a fixed count, not -n auto (the machine's core count), so CI load
# does not grow with the machine; most tests wait on child processes, so it may exceed the cores
# (docs/decisions.md, "Parallel tests"). `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= 3

# the runtime-only environment the SBOM describes (no dev tools), and what a release build records
SBOM_VENV := .sbom-venv
DIST := dist
GIT_COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
POLICY_REVISION ?=

.PHONY: run test install lint bench clean sbom release

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

sbom: install
	rm -rf $(SBOM_VENV)
	$(PYTHON) -m venv $(SBOM_VENV)
	$(SBOM_VENV)/bin/python -m pip install --quiet --no-cache-dir .
	mkdir -p $(DIST)
	bash scripts/sbom.sh $(SBOM_VENV)/bin/python $(DIST)/portcullis.cdx.json
	sha256sum $(DIST)/portcullis.cdx.json

release: sbom
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir $(DIST) .
	$(SBOM_VENV)/bin/python -m portcullis.build_info --commit "$(GIT_COMMIT)" --policy-revision "$(POLICY_REVISION)" \
		--output $(DIST)/build.json
	cd $(DIST) && sha256sum portcullis-*.whl portcullis.cdx.json build.json > SHA256SUMS
	cat $(DIST)/SHA256SUMS

bench: install
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) $(SBOM_VENV) .tools .pytest_cache
