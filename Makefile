# Two commands do all the set-up on a fresh machine with Python 3.10+ and pip:
#   make demo   set up .venv and run the main job
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
# The torch release the project is tested with; override for another build,
# e.g. make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0
BIN = $(VENV)/bin

.PHONY: demo demo-loc test test-slow lint bench gpu-check gpu-plan clean

# The demo needs the package; the tests and lint also its dev extras (pytest, hypothesis,
# protobuf, ruff, onnx), installed once into the same venv. (Not pip's --no-compile: with
# PYTHONDONTWRITEBYTECODE set, as on CI, every process would compile torch again.)
$(BIN)/vggspec: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(BIN)/vggspec
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The main job: train the demo net on the built-in demo data (a new run folder each
# time), then evaluate it with the paper's dense multi-scale protocol.
DEMO_RUN ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

demo: $(BIN)/vggspec
	$(BIN)/vggspec run train --config specs/demo.yaml out=$(DEMO_RUN)
	$(BIN)/vggspec run eval --checkpoint $(DEMO_RUN)

# Localisation (Appendix A): the demo classification net (specs/demo.yaml, as make demo), a
# PCR localisation net fine-tuned from it on the boxed demo data (written once;
# specs/demo-loc.yaml), then both test protocols (Tables 8 and 9) at its training scale S = 32.
DEMO_LOC_DATA ?= runs/demo-boxes
DEMO_LOC_RUN ?= runs/demo-loc-$(shell date +%Y%m%d-%H%M%S)

demo-loc: $(BIN)/vggspec
	test -d $(DEMO_LOC_DATA)/annotations || $(BIN)/vggspec data demo $(DEMO_LOC_DATA) --boxes
	$(BIN)/vggspec run train --config specs/demo.yaml out=$(DEMO_LOC_RUN)/cls
	$(BIN)/vggspec run train --config specs/demo-loc.yaml data=$(DEMO_LOC_DATA) \
		init=$(DEMO_LOC_RUN)/cls out=$(DEMO_LOC_RUN)/loc
	$(BIN)/vggspec run eval --checkpoint $(DEMO_LOC_RUN)/loc --classifier $(DEMO_LOC_RUN)/cls \
		--protocol both --scales 32

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q --durations=15

test-slow: $(VENV)/.dev
	$(BIN)/python -m pytest -q -m slow

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(BIN)/vggspec
	$(BIN)/python bench/compile.py

# On a CUDA machine: the plan (every launch compiled for this GPU), kernels, layers,
# training step, dense evaluation and every spec (bench/gpu_check.py). It needs no venv: on
# a machine with torch and triton preinstalled and no network,
# `make gpu-check PYTHON=python3 LARK=path/to/lark-*.whl`. `make gpu-plan` writes the plan
# beforehand on any machine (no GPU); gpu-check with the same GPU_CHECK_OUT reuses it.
GPU_CHECK_OUT ?= runs/gpu-check-$(shell date +%Y%m%d-%H%M%S)
GPU_TARGET ?= sm_90
# PYTHON named on the command line wins over a .venv the tree may carry from another machine.
VENV_PYTHON = $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
GPU_PYTHON ?= $(if $(filter command line,$(origin PYTHON)),$(PYTHON),$(VENV_PYTHON))

gpu-check:
	PYTHONPATH="$(LARK):$$PYTHONPATH" $(GPU_PYTHON) bench/gpu_check.py $(GPU_CHECK_OUT)

gpu-plan:
	PYTHONPATH="$(LARK):$$PYTHONPATH" $(GPU_PYTHON) bench/gpu_check.py $(GPU_CHECK_OUT) \
		--plan --target $(GPU_TARGET)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache
