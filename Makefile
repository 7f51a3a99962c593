# make run   -- create .venv if missing, install the project, train the main job (S5 on MNIST)
# make test  -- create .venv if missing, install the project, run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install run test

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m eva_lightning fit --config configs/s5.yaml

test: install
	$(PY) -m pytest -q -rs
