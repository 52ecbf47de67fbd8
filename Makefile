# vma_tf — common tasks. `make train` and `make test` create .venv when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SHARED_DATA := $(abspath ../shared/data)
# Raw-data lookup: --data_dir, then $VMA_DATA_DIR, then ./data (no download);
# tfds prepares them into $VMA_TFDS_DIR, else ~/.cache/vma_tf/tfds (make data).
ifneq ($(wildcard $(SHARED_DATA)/SHA256SUMS),)
export VMA_DATA_DIR ?= $(SHARED_DATA)
endif
export TF_CPP_MIN_LOG_LEVEL ?= 2

PRESET  ?= mnist_recall
# The main job: 20 000 steps of mnist_recall (|M| = 256, from scratch) take
# about 6 min on 2 cores and learn the lookup table (paper Fig. 2A).
STEPS   ?= 20000
WORKDIR ?= $(HOME)/vma_runs/$(PRESET)_$(STEPS)
ARGS    ?=

.PHONY: venv data train reproduce reproduce-report test test-slow clean-venv

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

## Prepare every dataset in tfds' cache ($VMA_TFDS_DIR, else ~/.cache/vma_tf/tfds)
## from the raw files; training does this on first use anyway.
data: venv
	$(PY) -m launchers.prepare_data

## The main job: the default preset, resumable (rerun continues), progress bar,
## summary and samples.png at the end. Override: make train PRESET=mnist_vae STEPS=1000 ARGS="--seed=1"
train: venv
	$(PY) -m launchers.train --preset=$(PRESET) --steps=$(STEPS) --workdir=$(WORKDIR) $(ARGS)

## The paper's rows at 50 000 steps (or a 10 000-step plateau), resumable: each
## rerun continues. ROWS: a comma list of rows (all by default; see
## `python -m launchers.reproduce --action=list`); RUNS: one lane of their runs.
## Example, one lane (each 48-map run done in ~1.9 h on 2 AMX cores):
## make reproduce ROWS=classification RUNS=fewshot_vma_c48
## or two lanes, one TF thread each (11-15 % more steps/h in all, each run 1.8x slower):
## make reproduce ROWS=fewshot RUNS=fewshot_vma_c48 ARGS=--threads=1 &
## make reproduce ROWS=gmn_table RUNS=gmn ARGS=--threads=1
## RUNS_DIR: the runs' directory (the launcher's default, ~/vma_runs/long, when unset).
ROWS ?=
RUNS ?=
RUNS_DIR ?=
REPRODUCE = $(PY) -m launchers.reproduce $(if $(RUNS_DIR),--runs_dir=$(RUNS_DIR)) $(if $(ROWS),--rows=$(ROWS)) $(if $(RUNS),--runs=$(RUNS))
reproduce: venv
	$(REPRODUCE) --action=run $(ARGS)

## The paper table from the runs so far, with budget curves (FIGURE=PNG for the figure).
FIGURE ?=
reproduce-report: venv
	$(REPRODUCE) --action=report $(if $(FIGURE),--figure=$(FIGURE)) $(ARGS)

## The default test suite (< 15 min on 2 cores; long runs are marked slow), on
## TEST_WORKERS pytest-xdist processes (files with an xdist_group mark stay in
## one process, so their module fixtures are built once). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: venv
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

## The tests marked slow (the long runs: each >= 30 s under `make test` on the AVX2-only
## EPYC, BUILD.md "Tests"), on the same workers. CI runs it after `make test`.
test-slow: venv
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m slow

clean-venv:
	rm -rf $(VENV)
