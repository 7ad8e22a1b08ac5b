#!/usr/bin/env bash
# A running Docker engine (and docker-compose), as `make test-docker` needs them: nothing to do where `docker info` answers; else, as
# root, Debian's docker.io (Engine 20.10) and debootstrap are installed where missing and dockerd is started in the
# background (overlay2; log in ${DOCKERD_LOG:-/var/log/metareward-dockerd.log}). Elsewhere: install Docker yourself.
set -euo pipefail
if docker info >/dev/null 2>&1 && command -v docker-compose >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "engine.sh: no Docker daemon answers and this is not root: start Docker (or add yourself to its group)" >&2
    exit 2
fi
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null || ! command -v docker-compose >/dev/null; then
    echo "engine.sh: installing Debian's docker.io, docker-compose and debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose debootstrap >/dev/null
fi
docker info >/dev/null 2>&1 && exit 0
log="${DOCKERD_LOG:-/var/log/metareward-dockerd.log}"
nohup dockerd >"$log" 2>&1 &
for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && { echo "engine.sh: dockerd started (log $log)"; exit 0; }
    sleep 1
done
echo "engine.sh: dockerd did not answer within 60 s; its log ($log):" >&2
tail -20 "$log" >&2
exit 1
