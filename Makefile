# speechxl — the two commands of the README quick start live here.
#   make demo   synthesise SynthST, train the S2T baseline, translate and score (recipes/synth)
#   make test   create .venv, install torch (CPU) + speechxl[test], lint (ruff), run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?= -n 2

.PHONY: venv test test-slow demo clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: an unpinned torch pulled in by a dependency would be a multi-GB CUDA build
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: venv
	$(PY) -m pytest -m slow

demo: venv
	PATH=$(abspath $(VENV))/bin:$$PATH bash recipes/synth/run.sh

clean:
	rm -rf $(VENV) exp
