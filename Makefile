# Developer entry points. `make test` is the command CI runs (.ci/run).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp
# Pinned so pip picks the local CPU wheel; an unpinned torch pulls gigabytes of CUDA packages.
TORCH_VERSION := 2.13.0
# Root needs no sudo; elsewhere use it when it exists.
SUDO := $(shell [ "$$(id -u)" -ne 0 ] && command -v sudo)

.PHONY: venv system-deps test demo bench clean distclean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(MAKE) --no-print-directory system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

# open3d loads libusb at import time.
system-deps:
	dpkg -s libusb-1.0-0 >/dev/null 2>&1 || ($(SUDO) apt-get update && $(SUDO) apt-get install -y libusb-1.0-0)

test: venv
	$(BIN)/python -m pytest -q tests

demo: venv
	$(BIN)/recon demo

bench: venv
	$(BIN)/python tools/bench.py --preset tiny --device cpu

clean:
	rm -rf build dist *.egg-info .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
