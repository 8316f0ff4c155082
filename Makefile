# Two commands do everything: `make run` (start the MONAI Label server on the
# sample data, setting everything up on first use) and `make test`.
# Both create the virtual environment and install requirements.txt when missing.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
HOST ?= 127.0.0.1
PORT ?= 8000
WORKDIR ?= runs/default

.PHONY: run test venv clean

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip wheel setuptools
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -r requirements.txt
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m lib.app_setup --workdir $(WORKDIR) --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf runs .pytest_cache
