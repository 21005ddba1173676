# Two commands do all the set-up: `make run` (the main job on an embedded default) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CK keeps its registry here, inside the checkout, so nothing outside it is written.
export CK_REPOS ?= $(CURDIR)/.ck
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONWARNINGS ?= ignore::SyntaxWarning
BATCH ?= 2

.PHONY: setup run test browser postgres clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	@if [ ! -x $(PY) ]; then \
	  if $(PYTHON) -c 'import torch' 2>/dev/null; then \
	    echo "using the torch already installed for $(PYTHON)"; $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; fi
	$(PY) -c 'import torch' 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	@# ck 2.6.4's setup.py imports the `imp` module, removed in Python 3.12: the zombie-imp recipe.
	$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))' && \
	  $(PY) -m pip install -q zombie-imp setuptools && $(PY) -m pip install -q --no-build-isolation ck==2.6.4 || true
	$(PY) -m pip install -q -e '.[test]'
	@mkdir -p $(CK_REPOS)
	@ck find repo:ck-precision-bench >/dev/null 2>&1 || ck add repo --import --path=$(CURDIR) --quiet >/dev/null
	@touch $@

# `ck run program:resnet-fp16`, with CK's own output kept in out/ck-run-resnet-fp16.log (VERBOSE=1: all of it here).
run: setup
	@$(PY) -m ck_plugins.ckconsole $(if $(VERBOSE),--verbose) run program:resnet-fp16 --env.CK_BATCH_SIZE=$(BATCH) --treat_return_code_as_exit_code=yes

test: setup browser postgres
	$(PY) -m pytest -q -n 2 --dist worksteal  # two workers (pytest-xdist) that take over each other's queued tests when idle

# Debian's Chromium for the report's browser tests (installed when we are root and it is missing).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium is not installed and cannot be here: the browser tests will say so and skip"

# Debian's PostgreSQL for the service's tests on a real server (installed when we are root and it is missing).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } || \
	  echo "postgresql is not installed and cannot be here: the PostgreSQL service tests will say so and skip"

clean:
	rm -rf $(VENV) $(CK_REPOS) program/*/tmp .pytest_cache out
