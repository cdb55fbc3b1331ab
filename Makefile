# Two commands do everything: `make lab` and `make test`. Both build .venv when needed.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
# Which torch to install first. CPU-only machines without internet to download.pytorch.org can
# point this at a local CPU build, as CI does: make test TORCH=torch==2.13.0
TORCH ?= torch>=2.2
LAB_ARGS ?=
PYTEST_ARGS ?=

PY := $(VENV)/bin/python
# JupyterLab refuses to start as root (containers, CI machines) unless told
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
STAMP := $(VENV)/.bnlab-installed
E2E_STAMP := $(VENV)/.bnlab-e2e-installed
# This machine's pip.conf names local indexes that do not exist; the warnings drown real errors.
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }
# notebooks/conftest.py makes nbval compare a lesson's claims exactly and mask its measured numbers
NBVAL := --nbval --nbval-current-env

.PHONY: setup lab test unit nbval e2e bench execute clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing $(TORCH) and bnlab into $(VENV) ..."
	$(PY) -m pip install -q "$(TORCH)" 2>&1 | $(QUIET_PIP)
	$(PY) -m pip install -q -e ".[test]" 2>&1 | $(QUIET_PIP)
	@touch $@

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/00_index.ipynb $(ROOT_FLAG) $(LAB_ARGS)

test: $(STAMP)
	$(PY) -m pytest tests notebooks $(NBVAL) $(PYTEST_ARGS)

unit: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

nbval: $(STAMP)
	$(PY) -m pytest notebooks $(NBVAL) $(PYTEST_ARGS)

# Lessons 01 and 04 run in JupyterLab in headless Chromium (Debian's /usr/bin/chromium, driven by
# Playwright); screenshots go to e2e-artifacts/. `make test` does not collect tests/e2e.
e2e: $(E2E_STAMP)
	$(PY) -m pytest tests/e2e --e2e -v $(PYTEST_ARGS)

$(E2E_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[e2e]" 2>&1 | $(QUIET_PIP)
	@touch $@

# Re-execute every lesson in place, top to bottom, as students should find them.
execute: $(STAMP)
	cd notebooks && ../$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=600 --ExecutePreprocessor.store_widget_state=True [0-9]*.ipynb

bench: $(STAMP)
	for script in benchmarks/bench_*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis e2e-artifacts
