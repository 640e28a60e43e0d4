# Two commands do everything on a fresh machine:
#   make demo   set up (.venv + apt packages) and run the demo on the bundled sample data
#   make test   set up the same way and run the tests
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := tesseract-ocr tesseract-ocr-eng poppler-utils
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE := disabled
export RAY_AUTH_MODE := disabled
export TOKENIZERS_PARALLELISM := false

.PHONY: setup apt demo lint test test-quick bench clean

setup: apt $(STAMP)

apt:
	@missing=""; for cmd in tesseract:tesseract-ocr pdftoppm:poppler-utils; do \
	  command -v $${cmd%%:*} >/dev/null || missing="$$missing $${cmd##*:}"; done; \
	if [ -n "$$missing" ] || [ ! -f /usr/share/tesseract-ocr/5/tessdata/eng.traineddata ]; then \
	  echo "installing apt packages: $(APT_PACKAGES)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: setup
	$(PY) -m examples.demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q

test-quick: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf out/ .pytest_cache
