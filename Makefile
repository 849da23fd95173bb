# Two commands: `make demo` (the main job on MovieLens-100K) and `make test` (the test suite).
# Both create or reuse a local virtualenv and install the package into it.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed

.PHONY: demo test clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[test,flower]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pprsf run configs/ml100k.py

test: $(STAMP)
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis .jax_cache
