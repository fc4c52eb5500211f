# tokred: `make sweep` (main job, embedded default) and `make test` set everything up themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= experiments/configs/default.yaml
OUT    ?= runs/default

.PHONY: install test lint sweep smoke bench bench-centerclip bench-tempme measure scale-bench clean

install: $(STAMP)

# Created once and reused; reinstalled only when the dependencies change.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check tokred methods experiments tests examples

sweep: install
	$(VENV)/bin/tokred sweep --config $(CONFIG) --out $(OUT)

smoke: install
	$(VENV)/bin/tokred sweep --config experiments/configs/smoke.yaml --out runs/smoke

# speed-up vs none measured in this process (interleaved rounds); ideal = GMACs ratio
bench: install
	$(VENV)/bin/tokred measure --model ViT-B-32 --reducer tome.r2 --batch-size 4 \
	  --repeats 3 --warmup 1 --rounds 3 --skip-fvcore --skip-memory

# CenterCLIP's paper settings (k-medoids and spectral) with the share of time in clustering
bench-centerclip: install
	$(VENV)/bin/tokred measure --model ViT-B-32 --reducer centerclip.paper --batch-size 4 \
	  --repeats 3 --warmup 1 --rounds 3 --site-timing --skip-fvcore --skip-memory
	$(VENV)/bin/tokred measure --model ViT-B-16 --reducer centerclip.paper --batch-size 1 \
	  --repeats 3 --warmup 1 --rounds 3 --site-timing --skip-fvcore --skip-memory

# TempMe's paper settings, and one training step of its recipe (LoRA r=8 + temporal params)
bench-tempme: install
	$(VENV)/bin/tokred measure --model ViT-B-32 ViT-B-16 --reducer tempme.paper --batch-size 2 \
	  --repeats 3 --warmup 1 --rounds 3 --train-step lora --skip-fvcore

# issue-5 table: every reducer at its paper settings, B/32 + B/16 video, timm ViT-B/16 image mode
measure: install
	$(VENV)/bin/tokred measure --model ViT-B-32 ViT-B-16 timm:vit_base_patch16_224 \
	  --reducer paper --batch-size 1 4 --repeats 3 --rounds 3 --out runs/measure.jsonl

scale-bench: install
	$(VENV)/bin/tokred sweep --config experiments/configs/scale_bench.yaml --out runs/scale

clean:
	rm -rf runs .pytest_cache .ruff_cache build *.egg-info
