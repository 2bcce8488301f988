# Two commands do all the set-up on a fresh machine (see README.md):
#   make main   creates .venv when missing, registers the Jupyter kernel, runs the quick pipeline
#   make test   creates .venv when missing and runs the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROFILE ?= cpu

.PHONY: main test test-all venv kernel clean-outputs

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

kernel: venv
	$(BIN)/python -m ipykernel install --user --name xcross --display-name "Python (xcross)" >/dev/null
	@echo "Jupyter kernel 'xcross' registered for $(BIN)/python"

main: kernel
	$(BIN)/python -m xcross_lib.run --pipeline quick --profile $(PROFILE)

test: venv
	$(BIN)/python -m pytest

# everything, the opt-in slow tier included
test-all: venv
	$(BIN)/python -m pytest -m ""
