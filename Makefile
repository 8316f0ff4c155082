# Two commands do everything: `make run` (start the MONAI Label server on the
# sample data, setting everything up on first use) and `make test`.
# Both create the virtual environment and install requirements.txt when missing.
# `make test` also creates .venv-slicer (3D Slicer's core libraries, the slicer-core
# wheel, which pins its own VTK) and runs the Slicer module's scene tests there, and
# installs the Orthanc PACS with its DICOMweb plugin (Debian packages orthanc and
# orthanc-dicomweb) when they are missing and apt-get may run (root or password-less
# sudo); the PACS tests start their own Orthanc, and are skipped, saying why, without it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
HOST ?= 127.0.0.1
PORT ?= 8000
WORKDIR ?= runs/default
SLICER_VENV := .venv-slicer
SLICER_PY := $(SLICER_VENV)/bin/python
SLICER_REQUIREMENTS := tests/slicer_module/scene/requirements.txt
SLICER_STAMP := $(SLICER_VENV)/.requirements-installed

.PHONY: run test venv slicer-venv orthanc clean

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip wheel setuptools
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -r requirements.txt
	@touch $(STAMP)

venv: $(STAMP)

$(SLICER_STAMP): $(SLICER_REQUIREMENTS)
	@test -x $(SLICER_PY) || $(PYTHON) -m venv $(SLICER_VENV)
	$(SLICER_PY) -m pip install --upgrade pip wheel setuptools
	$(SLICER_PY) -m pip install -r $(SLICER_REQUIREMENTS)
	@touch $(SLICER_STAMP)

slicer-venv: $(SLICER_STAMP)

orthanc: $(STAMP)
	$(PY) -m tests.pacs.orthanc install

run: $(STAMP)
	$(PY) -m lib.server.setup --workdir $(WORKDIR) --host $(HOST) --port $(PORT)

# The scene tests start their throwaway server with the server environment's Python.
test: $(STAMP) $(SLICER_STAMP) orthanc
	$(PY) -m pytest -q tests
	LORIS_SERVER_PYTHON=$(abspath $(PY)) $(SLICER_PY) -m pytest -q -p no:cacheprovider \
		--confcutdir=tests/slicer_module/scene tests/slicer_module/scene

clean:
	rm -rf runs .pytest_cache
