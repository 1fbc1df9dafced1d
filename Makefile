# The README's two commands. Both create .venv if missing and install the package with all
# extras (pinned by constraints.txt); the install is skipped when pyproject.toml is unchanged.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export OMP_NUM_THREADS ?= 2
export MPLBACKEND := Agg

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[torch,bench,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/stepsize reproduce all --quick --out results/

test: $(STAMP)
	$(BIN)/ruff check src tests examples
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check src tests examples

clean:
	rm -rf $(VENV) results build src/*.egg-info
