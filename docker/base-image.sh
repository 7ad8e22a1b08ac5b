#!/usr/bin/env bash
# A Python 3.11 base image from Debian's own packages, for hosts that reach no container registry (where
# `docker pull python:3.11-slim` fails). debootstrap needs only Debian's package mirror, which such hosts reach.
#   docker/base-image.sh [NAME]          (default metareward-base:bookworm; about 3 min, 300 MB)
#   make images BASE=metareward-base:bookworm WHEELHOUSE=1
# Does nothing when NAME already exists. Needs root (debootstrap) and a running Docker daemon.
set -euo pipefail
name="${1:-metareward-base:bookworm}"
if docker image inspect "$name" >/dev/null 2>&1; then
    echo "base image $name: present"
    exit 0
fi
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
# minbase: dpkg, apt and their needs only; python3-venv brings ensurepip, so the image can make a venv.
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" \
    "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$name" >/dev/null
echo "base image $name: built ($(docker run --rm "$name" python3 --version))"
