# FAID-Recon. `make train` and `make test` set up .venv with the pinned packages first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REQ_HASH := $(shell cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(REQ_HASH)
CONFIG ?= experiments/configs/default.yaml
OUT ?= out

.PHONY: venv test train bench render-demo synthfaces-preview prepare-celeba prepare-aflw attr-net parsing-net clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

test: venv
	$(PY) -m pytest

train: venv
	$(PY) -m experiments.train --config $(CONFIG)

bench: venv
	$(PY) -m benchmarks.run

render-demo: venv
	$(PY) -m experiments.render_demo -o $(OUT)/render_demo

synthfaces-preview: venv
	$(PY) -m data.synthfaces preview -o $(OUT)/synthfaces

prepare-celeba: venv
	$(PY) -m data.prepare celeba "$(CELEBA_DIR)"

prepare-aflw: venv
	$(PY) -m data.prepare aflw2000 "$(AFLW_DIR)"

attr-net: venv
	$(PY) -m experiments.perception_nets attributes --config $(CONFIG)

parsing-net: venv
	$(PY) -m experiments.perception_nets parsing --config $(CONFIG)

clean:
	rm -rf $(OUT) runs .pytest_cache
