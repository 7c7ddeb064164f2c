# FAID-Recon. `make train` and `make test` set up .venv with the pinned packages first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REQ_HASH := $(shell cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(REQ_HASH)
CONFIG ?= experiments/configs/default.yaml
OUT ?= out
NPROC ?= 1
CHECKPOINT ?= checkpoints/default/last.pt

.PHONY: venv test train bench render-demo synthfaces-preview prepare-celeba prepare-aflw attr-net parsing-net clean \
	eval-synth eval-celeba eval-aflw ablations reconstruct diagnose

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

test: venv
	$(PY) -m pytest

train: venv
ifeq ($(NPROC),1)
	$(PY) -m experiments.train --config $(CONFIG)
else
	$(VENV)/bin/torchrun --standalone --nproc_per_node $(NPROC) -m experiments.train --config $(CONFIG)
endif

eval-synth: venv
	$(PY) -m experiments.evaluate --dataset synthfaces --checkpoint $(CHECKPOINT) --config $(CONFIG) $(if $(LIMIT),--limit $(LIMIT))

diagnose: venv
	$(PY) -m experiments.diagnose --checkpoint $(CHECKPOINT) --config $(CONFIG) $(if $(LIMIT),--limit $(LIMIT))

eval-celeba: venv
	$(PY) -m experiments.evaluate --dataset celeba --root "$(CELEBA_DIR)" --checkpoint $(CHECKPOINT) --config $(CONFIG) $(if $(LIMIT),--limit $(LIMIT))

eval-aflw: venv
	$(PY) -m experiments.evaluate --dataset aflw2000 --root "$(AFLW_DIR)" --checkpoint $(CHECKPOINT) --config $(CONFIG) $(if $(LIMIT),--limit $(LIMIT))

ablations: venv
	$(PY) -m experiments.sweep --config $(CONFIG) $(if $(QUICK),--quick) $(if $(STAGE1),--stage1 $(STAGE1)) \
		$(if $(VARIANTS),--variants $(VARIANTS))

reconstruct: venv
	@test -n "$(PHOTOS)" || { echo "usage: make reconstruct PHOTOS='photo.jpg or folder' [OUT=out] [FIT=40]"; exit 2; }
	$(PY) -m experiments.reconstruct $(PHOTOS) -o $(OUT) --checkpoint $(CHECKPOINT) $(if $(FIT),--fit $(FIT))

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
	rm -rf $(OUT) runs reports .pytest_cache
