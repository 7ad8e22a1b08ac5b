"""Kill soak: many seeded SIGKILLs of a real `metareward run`'s process group, each followed by the same command.

The command is `python -m flows run smoke ...` (the `metareward` console script) with stage processes of their own
and two replicas per sharded stage; tests/flows/standins/sitecustomize.py installs the crash driver's stand-ins
(fake engine slowed by CRASH_DELAY, a DPO stand-in saving real safetensors as save_pretrained does, straight to the
final names) in every process of it. An uninterrupted run gives the reference timeline: each stage computing (its
first `start` event to its manifest) and the stretch after it (to the next stage's start, or the exit: reports,
Prefect). The kills are spread over those segments in order, `INSIDE` times as many in a stage as after it: a kill
waits for its segment's event in the attempt and lands at a uniform moment of what is left of it (a sharded stage's
committed shards are not computed again); about one kill in `EARLY` lands at a random moment before that instead
(start-up, skipping finished stages). A segment the run passed without its kills hands them on. Each kill hits the
whole process group (stage processes and replicas included), and the next attempt starts once none of them runs.

After every kill: every *.json / *.jsonl under the run parses (final names; `.tmp-*` leftovers are allowed),
every *.safetensors has a whole header, and every manifest.json is recorded (bytes, mtime). At the end: no
recorded manifest was rewritten or removed, no manifest or shard was written twice, the pairs files equal the
reference's byte for byte and every stage's key, digests and counts equal the reference's.

METAREWARD_SOAK_KILLS (default 36) and METAREWARD_SOAK_SEED (default 33) set a longer soak by hand (`-s` prints
where the kills landed):
    METAREWARD_SOAK_KILLS=200 METAREWARD_SOAK_SEED=7 pytest -s -m slow tests/flows/test_kill_soak.py
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from metareward.records import Manifest

ROOT = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).with_name("standins")
KILLS = int(os.environ.get("METAREWARD_SOAK_KILLS", "36"))
SEED = int(os.environ.get("METAREWARD_SOAK_SEED", "33"))
INSIDE = 2  # a stage computing gets this many kills for one in the stretch after it
EARLY = 6  # about one kill in EARLY lands before its segment's event (start-up, skipping finished stages)
DELAY = "0.2"  # seconds per fake-engine call


# ----------------------------------------------------------------------------------------------- the command


def _command(store_root: Path, seed_model: Path) -> list[str]:
    return [sys.executable, "-m", "flows", "run", "smoke", "--no-progress", "engine.backend=fake",
            "execution.stage_process=own", "engine.replicas=2", f"model.path={seed_model}", "run.name=soak",
            "run.iterations=2", f"storage.root={store_root}", "engine.shard_size=8", "pairs.judge_pairs=[true, false]",
            "execution.retries=0", "eval.mt_bench.enabled=false", "eval.alpaca_eval.enabled=false",
            "eval.ifeval.limit=4", "eval.llmbar.limit=2"]


def _env(work: Path, api_url: str) -> dict:
    path = os.pathsep.join(p for p in (str(STANDINS), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(work / "prefect-home"),
            "CRASH_LOG": str(work / "events.log"), "CRASH_READY": str(work / "ready"), "CRASH_DELAY": DELAY,
            "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def _seed_model(folder: Path) -> Path:
    """A model folder the fake engine accepts: config.json and whole safetensors weights."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from crash_driver import save_weights
    finally:
        sys.path.pop(0)
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "fake"}')
    save_weights(str(folder), "0" * 16, 0.0)
    return folder


class Attempt:
    """One invocation of the command, in a process group of its own, reading the event log from where it began."""

    def __init__(self, cmd: list[str], env: dict, work: Path):
        self.log, self.work = work / "events.log", work
        self.offset = self.log.stat().st_size if self.log.exists() else 0
        self.started = time.monotonic()
        self.reached: float | None = None  # seconds from the launch to the event a kill was timed from
        self.proc = subprocess.Popen(cmd, env=env, cwd=work, start_new_session=True, stdin=subprocess.DEVNULL,
                                     stdout=open(work / "stdout.txt", "ab"), stderr=open(work / "stderr.txt", "ab"))

    def events(self) -> list[str]:
        if not self.log.exists():
            return []
        with open(self.log, "rb") as f:
            f.seek(self.offset)
            return [line for line in f.read().decode().split("\n")[:-1] if line]  # whole lines only

    def kill(self) -> None:
        """SIGKILL the whole group, then wait until none of its processes runs any more."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _group_alive(self.proc.pid):
            assert time.monotonic() < deadline, f"process group {self.proc.pid} still running 30 s after SIGKILL"
            time.sleep(0.02)

    def failure(self) -> str:
        return f"exit {self.proc.returncode}: {(self.work / 'stderr.txt').read_text()[-3000:]}"


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies waiting for a reaper do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended while we looked
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


# ----------------------------------------------------------------------------------------------- the store


def _check_files(run: Path) -> None:
    """Nothing under a final name is torn: JSON and JSONL parse, safetensors headers are whole."""
    for p in run.rglob("*"):
        if not p.is_file() or p.name.startswith(".tmp-") or any(part.startswith(".tmp-") for part in p.parts):
            continue
        if p.suffix == ".jsonl":
            for n, line in enumerate(p.read_text().splitlines(), 1):
                try:
                    json.loads(line)
                except json.JSONDecodeError as e:
                    raise AssertionError(f"{p}: line {n}: {e}") from None
        elif p.suffix == ".json":
            try:
                json.loads(p.read_text())
            except json.JSONDecodeError as e:
                raise AssertionError(f"{p}: {e}") from None
        elif p.suffix == ".safetensors":
            _check_safetensors(p)


def _check_safetensors(path: Path) -> None:
    """An 8-byte header length, a JSON header within the file, every tensor's data offsets within the file."""
    data = path.read_bytes()
    assert len(data) >= 8, f"{path}: {len(data)} bytes, no header length"
    n = int.from_bytes(data[:8], "little")
    assert 8 + n <= len(data), f"{path}: header of {n} bytes in a file of {len(data)}"
    header = json.loads(data[8:8 + n])
    for name, info in header.items():
        if name != "__metadata__":
            start, end = info["data_offsets"]
            assert 0 <= start <= end <= len(data) - 8 - n, f"{path}: {name} {info['data_offsets']} past the end"


def _torn_prefect_records(run: Path) -> set[str]:
    """Prefect's result records cut short: empty, or not JSON (every flow's and task's result is JSON). Prefect
    writes them in place (LocalFileSystem.write_path) and reads one that does not parse as a cache miss, so they
    are counted, not failed."""
    torn = set()
    for p in (run / ".prefect-results").glob("*"):
        try:
            json.loads(p.read_bytes())
        except ValueError:  # an empty file too
            torn.add(p.name)
    return torn


def _manifests(run: Path) -> dict[str, Path]:
    return {str(p.parent.relative_to(run)): p for p in run.rglob("manifest.json") if ".tmp-" not in str(p)}


def _snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


# ----------------------------------------------------------------------------------------------- the soak


@dataclass(frozen=True)
class Segment:
    """A stretch of the reference run's timeline: stage ``stage`` computing (``inside``) or what follows its
    manifest (the next stage's start, the report, the exit), ``seconds`` long."""

    stage: str  # "<name> <t>"
    inside: bool
    seconds: float

    @property
    def anchor(self) -> str:
        return f"{'start' if self.inside else 'stage'} {self.stage}"


def _timeline(events: list[tuple[float, str]], exit_at: float) -> list[Segment]:
    """The segments of an uninterrupted run from its events and their times."""
    began: dict[str, float] = {}
    out: list[Segment] = []
    for i, (at, e) in enumerate(events):
        kind, _, what = e.partition(" ")
        if kind == "start":
            began.setdefault(what, at)
        elif kind == "stage":
            later = [t for t, e2 in events[i + 1:] if e2.startswith("start ")]
            out += [Segment(what, True, at - began[what]), Segment(what, False, (later[0] if later else exit_at) - at)]
    return out


def _reference(cmd: list[str], env: dict, work: Path) -> list[Segment]:
    """An uninterrupted run, its events timed as they appear."""
    a = Attempt(cmd, env, work)
    timed: list[tuple[float, str]] = []
    while True:
        running = a.proc.poll() is None
        now = time.monotonic()
        timed += [(now, e) for e in a.events()[len(timed):]]
        if not running:
            break
        time.sleep(0.01)
    assert a.proc.returncode == 0, a.failure()
    return _timeline(timed, time.monotonic())


def _landed(events: list[str]) -> str:
    """Where an attempt was when it died: inside the last stage it started and did not finish, else after the
    last stage it finished, else in its start-up (configuration, Prefect, skipping finished stages)."""
    open_: list[str] = []
    last = None
    for e in events:
        kind, _, what = e.partition(" ")
        if kind == "start":
            open_ = [s for s in open_ if s != what] + [what]
        elif kind == "stage":
            open_, last = [s for s in open_ if s != what], what
    return f"in {open_[-1]}" if open_ else f"after {last}" if last else "start-up"


def _done(run: Path, stage: str) -> bool:
    name, t = stage.split()
    return (run / f"iter_{t}" / name / "manifest.json").exists()


def _left(run: Path, seg: Segment, shards: dict[str, int]) -> float:
    """Seconds of ``seg`` an attempt still has to run: a sharded stage's committed shards are not computed again."""
    if not seg.inside or seg.stage not in shards:
        return seg.seconds
    name, t = seg.stage.split()
    committed = len([p for p in (run / f"iter_{t}" / name / "shards").glob("*/*.jsonl") if ".tmp-" not in p.name])
    return seg.seconds * max(0.1, 1 - committed / shards[seg.stage])


@dataclass
class Soak:
    """The kill loop: which segment the next kill aims at, and where the kills landed."""

    timeline: list[Segment]
    kills: int
    rng: random.Random
    spent: int = 0
    landed: Counter = field(default_factory=Counter)
    seen: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # manifest -> bytes, mtime when first seen
    torn_records: set[str] = field(default_factory=set)

    def target(self, run: Path) -> Segment | None:
        """The first segment still ahead of the run whose share of the kills (spread along the timeline, a stage
        computing `INSIDE` times a stretch between stages, what earlier segments did not use included) is not
        spent; None once every stage is done."""
        weights = [INSIDE if s.inside else 1 for s in self.timeline]
        ahead = [(i, s) for i, s in enumerate(self.timeline) if not _done(run, s.stage)]
        for i, seg in ahead:
            if self.spent < round(self.kills * sum(weights[:i + 1]) / sum(weights)):
                return seg
        return ahead[-1][1] if ahead else None

    def record(self, run: Path) -> None:
        for where, p in _manifests(run).items():
            self.seen.setdefault(where, _snapshot(p))


def _kill_once(soak: Soak, seg: Segment | None, left: float, cmd: list[str], env: dict, work: Path,
               early: float | None) -> Attempt:
    """One attempt, killed ``early`` s after its launch when given, else at a random moment of the ``left``
    seconds of ``seg`` after its anchor event appears."""
    a = Attempt(cmd, env, work)
    at = a.started + early if early is not None else None
    while at is None or time.monotonic() < at:
        if a.proc.poll() is not None:  # the run completed first (exit 0); the caller stops
            assert a.proc.returncode == 0, f"the attempt aimed at {seg} failed: {a.failure()}"
            return a
        assert time.monotonic() - a.started < 180, f"{seg.anchor} not seen in 180 s"
        if at is None and seg.anchor in a.events():
            a.reached = time.monotonic() - a.started
            at = time.monotonic() + soak.rng.uniform(0.0, left)
        time.sleep(0.01)
    a.kill()
    return a


@pytest.mark.slow
def test_kill_soak(tmp_path, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    began = time.monotonic()
    api = PREFECT_API_URL.value()
    seed_model = _seed_model(tmp_path / "seed-model")

    ref_work = tmp_path / "ref"
    ref_work.mkdir()
    timeline = _reference(_command(ref_work / "store", seed_model), _env(ref_work, api), ref_work)
    ref_run = ref_work / "store" / "soak"
    ref_seconds = time.monotonic() - began
    ref, shards = _manifests(ref_run), {}
    for where, p in ref.items():
        m = Manifest.model_validate_json(p.read_text())
        if m.stats.get("shards"):
            shards[f"{m.stage} {m.iteration}"] = m.stats["shards"]

    work = tmp_path / "soak"
    work.mkdir()
    cmd, env, run = _command(work / "store", seed_model), _env(work, api), work / "store" / "soak"
    soak = Soak(timeline, KILLS, random.Random(SEED))
    lead = 3.0  # seconds an attempt takes to reach the stage it resumes at (the last one measured)
    while soak.spent < KILLS:
        seg = soak.target(run)
        early = soak.rng.uniform(0.0, lead) if seg is None or soak.rng.random() < 1 / EARLY else None
        left = _left(run, seg, shards) if seg else 0.0
        # the run's last stretch ends with the process: aimed short of it, so the kill comes first
        a = _kill_once(soak, seg, 0.8 * left if seg == timeline[-1] else left, cmd, env, work, early)
        lead = a.reached or lead
        if a.proc.returncode == 0:  # it ended just before its kill: the run is complete
            break
        soak.spent += 1
        soak.landed[_landed(a.events())] += 1
        _check_files(run)
        soak.record(run)
        soak.torn_records |= _torn_prefect_records(run)
    final = Attempt(cmd, env, work)
    assert final.proc.wait(timeout=300) == 0, final.failure()
    _check_files(run)

    rewritten = sorted(w for w, snap in soak.seen.items()
                       if not (run / w / "manifest.json").exists() or _snapshot(run / w / "manifest.json") != snap)
    events = [e for e in (work / "events.log").read_text().splitlines() if not e.startswith("start ")]
    twice = sorted(e for e, n in Counter(events).items() if n > 1)
    inside = Counter({k.split(" ", 1)[1]: n for k, n in soak.landed.items() if k.startswith("in ")})
    print(f"\nkill soak (seed {SEED}): {soak.spent} kills, each followed by the same command ({soak.spent + 1} runs "
          f"after the reference); landed: {dict(sorted(soak.landed.items()))}; inside a stage: {sum(inside.values())} "
          f"({dict(sorted(inside.items()))}); manifests recorded at kills: {len(soak.seen)}, rewritten: "
          f"{len(rewritten)}; Prefect cache records torn: {len(soak.torn_records)}; reference run {ref_seconds:.0f} s; wall {time.monotonic() - began:.0f} s")
    assert soak.spent == KILLS, f"the run completed after {soak.spent} of {KILLS} kills"
    assert rewritten == [], f"manifests rewritten after a kill: {rewritten}"
    assert twice == [], f"written more than once: {twice}"

    got = _manifests(run)
    assert sorted(got) == sorted(ref)
    for where in ref:
        r, g = (Manifest.model_validate_json(p.read_text()) for p in (ref[where], got[where]))
        assert (g.key, g.digests, g.counts) == (r.key, r.digests, r.counts), where
    for t in (1, 2):
        pairs = f"iter_{t}/pairs/pairs.jsonl"
        assert (run / pairs).read_bytes() == (ref_run / pairs).read_bytes(), pairs
    reused = sum(Manifest.model_validate_json(p.read_text()).stats.get("shards_reused", 0) for p in got.values())
    assert reused > 0  # kills landed between committed shards
    assert not list(run.rglob("shards"))  # scratch space of finished stages is gone
