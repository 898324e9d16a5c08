# Two commands on a fresh machine: `make demo` builds the sample release with DVC, `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: install demo test bench clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,models]'
	touch $(STAMP)

install: $(STAMP)

demo: install  ## build release/ from the bundled sample with `dvc repro`
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

test: install  ## run the test suite
	$(PY) -m pytest

bench: install  ## benchmarks, each printed beside its baseline with the ratio
	$(PY) bench/run.py

clean:
	rm -rf work reports release
