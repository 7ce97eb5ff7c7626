# Two entry points (see README): `make serve` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 5006
PYTEST_ARGS ?=
# extra pip arguments, e.g. PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu" so that
# pip takes PyTorch's CPU build (the `infer` extra) instead of PyPI's multi-GB CUDA build on Linux
PIP_ARGS ?=

.PHONY: setup serve test browser bench docs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install $(PIP_ARGS) -c constraints.txt -e ".[dev]"
	touch $@

# Debian's chromium for the browser tests (never `playwright install`: it downloads a browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y chromium; \
	  else sudo apt-get update && sudo apt-get install -y chromium; fi; }

serve: setup
	$(VENV)/bin/neurotwin serve --port $(PORT)

test: setup browser
	NEUROTWIN_QUICK=$${NEUROTWIN_QUICK:-1} $(PY) -m pytest -q --nbmake tests notebooks $(PYTEST_ARGS)
	$(MAKE) docs

# HTML documentation in docs/_build/html; any Sphinx warning fails the build (notebooks are rendered,
# not executed: the test suite runs them).
docs: setup
	rm -rf docs/_build docs/_generated
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html

bench: setup
	for f in bench/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done
