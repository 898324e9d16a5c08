# Two commands on a fresh machine: `make demo` builds the sample release with DVC, `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: install demo test test-fast bench clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,models,ray]'
# Label Studio's own validator and brush decoder check our tasks in the tests; its package pins an old
# numpy, so it goes in without its dependencies (the few its validator needs are in the dev extra)
	$(PY) -m pip install -q --no-deps label-studio-sdk==2.1.2
	touch $(STAMP)

install: $(STAMP)

demo: install  ## build release/ from the bundled sample with `dvc repro`
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

test: install  ## lint, then the whole test suite
	$(PY) -m ruff check src tests bench
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

test-fast: install  ## the inner loop: every test not marked slow (pytest markers in pyproject.toml)
	$(PY) -m pytest -m "not slow"

bench: install  ## benchmarks, each printed beside its baseline with the ratio
	$(PY) -m pip install -q -c constraints.txt --no-deps imagededup==0.3.3.post2 && $(PY) -m pip install -q -c constraints.txt PyWavelets scikit-learn
	$(PY) bench/run.py

clean:
	rm -rf work reports release
