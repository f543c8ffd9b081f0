# emofuse: `make install`, then `make demo` (the main job end to end) or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch and torchaudio are pinned as a pair: speechbrain imports torchaudio, which does not load
	# beside the CPU-only torch wheel; torch 2.9.1 + torchaudio 2.9.1 from PyPI (a CUDA build that
	# also runs on CPU-only machines) load together everywhere we run.
	$(BIN)/pip install --quiet torch==2.9.1 torchaudio==2.9.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/emofuse demo --out demo

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check emofuse tests bench
	$(BIN)/ruff format --check emofuse tests bench

format: $(STAMP)
	$(BIN)/ruff check --fix emofuse tests bench
	$(BIN)/ruff format emofuse tests bench

clean:
	rm -rf demo runs .pytest_cache
