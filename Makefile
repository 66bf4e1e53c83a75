# Two commands do all the set-up on a fresh machine with Python 3.10+ and pip:
#   make demo   set up .venv and run the main job
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
# The torch release the project is tested with; override for another build,
# e.g. make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0
BIN = $(VENV)/bin

.PHONY: demo test test-slow lint bench clean

$(BIN)/vggspec: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/vggspec
	$(BIN)/vggspec compile specs/E.vgg

test: $(BIN)/vggspec
	$(BIN)/python -m pytest -q

test-slow: $(BIN)/vggspec
	$(BIN)/python -m pytest -q -m slow

lint: $(BIN)/vggspec
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(BIN)/vggspec
	$(BIN)/python bench/compile.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache
