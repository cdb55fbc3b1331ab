# Two commands do everything: `make lab` and `make test`. Both build .venv when needed.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
LAB_ARGS ?=
PYTEST_ARGS ?=
# pytest-xdist workers for make test / unit / nbval: one per core; JOBS=0 runs everything in one process.
# --dist loadscope keeps each test file and each notebook on one worker (a notebook's cells run in order).
JOBS ?= auto
XDIST = -n $(JOBS) --dist loadscope

# Which torch to install. Left unset, pip's default: on Linux x86-64 that is the CUDA build (about
# 6 GB in .venv), so on a machine without an NVIDIA GPU `make` says so first. TORCH=cpu takes
# the CPU-only build from PyTorch's own CPU index (about 1.5 GB), as PyTorch's install selector
# gives it. Anything else is a pip requirement: CI uses the CPU build on its disk, TORCH=torch==2.13.0.
# TORCH_RANGE is pyproject.toml's torch requirement (tests/test_environment.py keeps them equal).
TORCH_RANGE := torch>=2.2
CPU_INDEX := https://download.pytorch.org/whl/cpu
ifeq ($(origin TORCH),undefined)
TORCH_GIVEN := no
TORCH_ARGS := '$(TORCH_RANGE)'
else ifeq ($(TORCH),cpu)
TORCH_GIVEN := yes
TORCH_ARGS := '$(TORCH_RANGE)' --index-url $(CPU_INDEX)
else
TORCH_GIVEN := yes
TORCH_ARGS := '$(TORCH)'
endif

PY := $(VENV)/bin/python
# JupyterLab refuses to start as root (containers, CI machines) unless told
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
# Holds the torch arguments it was set up with; newer than pyproject.toml when set up for it.
STAMP := $(VENV)/.bnlab-installed
E2E_STAMP := $(VENV)/.bnlab-e2e-installed
LINT_STAMP := $(VENV)/.bnlab-lint-installed
LINTED := bnlab tests benchmarks notebooks/conftest.py
GOAL := make $(or $(firstword $(MAKECMDGOALS)),setup)
NBVAL := --nbval --nbval-current-env
# This machine's pip.conf names local indexes that do not exist; the warnings drown real errors.
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: setup lab test unit nbval e2e lint homework bench execute site vendor clean

# Set-up, in one shell script so that each way it can fail ends in one line that says how to fix it.
# Nothing happens when .venv is set up for this pyproject.toml and for TORCH (when TORCH is given).
define SETUP_SCRIPT
fail() { printf 'make: %s\n' "$$*" >&2; exit 1; }
if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ] && \
   { [ $(TORCH_GIVEN) = no ] || [ "$$(cat $(STAMP))" = "$(TORCH_ARGS)" ]; }; then
  exit 0
fi
command -v $(PYTHON) >/dev/null || \
  fail "no '$(PYTHON)' found: bnlab needs Python >= 3.10; install it, or name one: $(GOAL) PYTHON=python3.12"
version=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])') || \
  fail "'$(PYTHON)' does not run: name a working Python >= 3.10: $(GOAL) PYTHON=python3.12"
$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] < (3, 10))' || \
  fail "bnlab needs Python >= 3.10, but '$(PYTHON)' is $$version: install a newer one and name it: $(GOAL) PYTHON=python3.12"
if [ ! -x $(PY) ]; then
  $(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || \
    fail "Python $$version ('$(PYTHON)') has no venv module with pip; on Debian or Ubuntu: sudo apt install python$$version-venv"
  $(PYTHON) -m venv $(VENV) || fail "'$(PYTHON) -m venv $(VENV)' failed (see above); remove $(VENV) and try again"
fi
# pip says little (-q) and logs everything, so that a failure to reach the index can be told apart.
pip_install() {
  local index=$$1; shift
  rm -f $(VENV)/pip.log
  $(PY) -m pip install -q --log $(VENV)/pip.log "$$@" 2>&1 | \
    $(QUIET_PIP) && return 0
  if grep -qiE "$(NETWORK_ERRORS)" $(VENV)/pip.log; then
    fail "pip could not reach the package index ($$index): check the network or proxy (HTTPS_PROXY), or name a mirror with PIP_INDEX_URL; pip's log: $(VENV)/pip.log"
  fi
  fail "pip could not install $$* (see above; pip's log: $(VENV)/pip.log)"
}
pypi=$${PIP_INDEX_URL:-https://pypi.org/simple}
if [ $(TORCH_GIVEN) = no ] && [ "$$(uname -sm)" = "Linux x86_64" ] && \
   ! command -v nvidia-smi >/dev/null && [ ! -e /proc/driver/nvidia/version ]; then
  echo "make: no NVIDIA GPU here, but pip's default torch for Linux is the CUDA build: about 6 GB into $(VENV) (the CPU-only build is about 1.5 GB: $(GOAL) TORCH=cpu)"
fi
if [ -f $(STAMP) ] && [ "$$(cat $(STAMP))" != "$(TORCH_ARGS)" ]; then
  echo "make: $(VENV) was set up with $$(cat $(STAMP)); replacing its torch"
  $(PY) -m pip uninstall -y -q torch
fi
echo "make: installing $(TORCH_ARGS) and bnlab into $(VENV) ..."
pip_install $(if $(filter cpu,$(TORCH)),$(CPU_INDEX),$$pypi) $(TORCH_ARGS)
# torch < 2.4 was built against NumPy 1: under NumPy 2 its torch.from_numpy raises.
numpy_cap=$$($(PY) -c 'import re, importlib.metadata as m; v = tuple(map(int, re.findall(r"\d+", m.version("torch"))[:2])); print("numpy<2" if v < (2, 4) else "")')
pip_install $$pypi -e ".[test]" $$numpy_cap
printf '%s' "$(TORCH_ARGS)" > $(STAMP)
endef
export SETUP_SCRIPT
NETWORK_ERRORS := Failed to establish a new connection|Name or service not known|Temporary failure in name resolution|Network is unreachable|No route to host|Connection refused|connection error|Max retries exceeded|ProxyError|timed out

setup:
	@bash -euo pipefail -c "$$SETUP_SCRIPT"

# What make set up, and where the lessons will run.
WHICH_TORCH = @$(PY) -c "from bnlab.runtime import environment_summary; print(environment_summary())"

# JupyterLab saves the widgets' state with a notebook (as .binder/postBuild sets it for Binder), so
# a saved lesson's explorers show again when it is reopened
WIDGET_STATE := {"@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": true}}

# Lab shows a notebook's saved widgets only once it trusts the notebook: the course's own are signed
# (in your Jupyter data directory), so each lesson opens with its explorers moving before it is run.
COURSE_NOTEBOOKS := notebooks/[0-9]*.ipynb notebooks/homework/*.ipynb notebooks/homework/solutions/*.ipynb

lab: setup
	$(WHICH_TORCH)
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	@echo '$(WIDGET_STATE)' > $(VENV)/share/jupyter/lab/settings/overrides.json
	@$(VENV)/bin/jupyter trust $(COURSE_NOTEBOOKS) >/dev/null
	$(VENV)/bin/jupyter lab notebooks/00_index.ipynb $(ROOT_FLAG) $(LAB_ARGS)

test: setup
	$(WHICH_TORCH)
	$(PY) -m pytest tests notebooks $(NBVAL) $(XDIST) $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest tests $(XDIST) $(PYTEST_ARGS)

nbval: setup
	$(PY) -m pytest notebooks $(NBVAL) $(XDIST) $(PYTEST_ARGS)

# Lessons 01 and 04 run in JupyterLab in headless Chromium (Debian's /usr/bin/chromium, driven by
# Playwright); screenshots go to e2e-artifacts/. `make test` does not collect tests/e2e.
e2e: setup
	@[ $(E2E_STAMP) -nt $(STAMP) ] || { $(PY) -m pip install -q -e ".[e2e]" 2>&1 | $(QUIET_PIP); touch $(E2E_STAMP); }
	$(PY) -m pytest tests/e2e --e2e -v $(PYTEST_ARGS)

# ruff, configured in pyproject.toml (line length 120); CI runs it before the tests.
lint: setup
	@[ $(LINT_STAMP) -nt $(STAMP) ] || { $(PY) -m pip install -q -e ".[lint]" 2>&1 | $(QUIET_PIP); touch $(LINT_STAMP); }
	$(VENV)/bin/ruff check $(LINTED)

# Homework: execute the solutions in place, then write the student versions from them (solution
# blocks replaced by stubs, outputs cleared; bnlab/assignments.py). A test fails when they drift apart.
homework: setup
	cd notebooks/homework/solutions && ../../../$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=600 --ExecutePreprocessor.store_widget_state=True *.ipynb
	$(PY) -m bnlab.assignments notebooks/homework/solutions notebooks/homework

# Re-execute every lesson in place, top to bottom, as students should find them.
execute: setup
	cd notebooks && ../$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=600 --ExecutePreprocessor.store_widget_state=True [0-9]*.ipynb

# The course as a web page: every lesson, the homework (student versions) and the README as HTML in
# build/site/, from the committed executed notebooks (nothing re-runs); offline, widgets included.
site: setup
	$(PY) -m bnlab.site --out build/site

# Fetch the site's JavaScript again with npm pack (needs npm and the npm registry), checked against
# the pins in bnlab/static/vendor/PINS.json. Its output is committed, so `make site` needs no network.
vendor: setup
	$(PY) -m bnlab.site --vendor

bench: setup
	$(PY) benchmarks/report.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-default .pytest_cache .hypothesis e2e-artifacts build/site
