"""metareward.pipeline.contract's stage keys digest the engine backend a stage runs, not every backend: a change to
the CPU engine's code re-keys a transformers run's engine stages and leaves a vLLM run's keys alone."""

from __future__ import annotations

import hashlib
import json

import pytest

from metareward.config import load_config
from metareward.pipeline import contract
from metareward.registry import ENGINE_CODE, STAGES, code_of
from metareward.runstore.code import module_file

ENGINE_STAGES = {name for name, s in STAGES.items() if s.engine}


def _keys(backend: str) -> dict[str, str]:
    cfg = load_config("smoke", [f"engine.backend={backend}"])
    return {s: contract.stage_key(s, cfg, 1, {"prompts": "d1"}) for s in STAGES}


@pytest.fixture
def decode_loop_edited(monkeypatch):
    """Makes the code digest see engines.decoding (the CPU engine's decode loop) as changed."""
    real = contract._digest_of

    def digest(modules):
        modules = list(modules)
        out = real(modules)
        return hashlib.sha256(f"{out} edited".encode()).hexdigest() if "metareward.engines.decoding" in modules else out

    return lambda: monkeypatch.setattr(contract, "_digest_of", digest)


def test_a_cpu_engine_change_rekeys_transformers_stages_only(decode_loop_edited):
    before = {b: _keys(b) for b in ENGINE_CODE}
    decode_loop_edited()
    after = {b: _keys(b) for b in ENGINE_CODE}
    assert after["vllm"] == before["vllm"] and after["fake"] == before["fake"]
    changed = {s for s in STAGES if after["transformers"][s] != before["transformers"][s]}
    assert changed == ENGINE_STAGES == {"prompt_pool", "eft", "generate", "judge", "meta_judge", "answers", "benchmark"}


def test_the_backend_enters_only_the_keys_of_stages_that_run_an_engine():
    vllm, transformers = _keys("vllm"), _keys("transformers")
    for s in STAGES:
        # the engine section is in the engine stages' config digest too; the stages without one keep their key
        assert (vllm[s] == transformers[s]) is (s not in ENGINE_STAGES), s
    assert contract.code_digest("train", "vllm") == contract.code_digest("train", "transformers")
    assert contract.code_digest("generate", "vllm") != contract.code_digest("generate", "transformers")


def test_each_backends_modules_exist_and_an_unknown_backend_is_an_error():
    for backend, modules in ENGINE_CODE.items():
        for mod in modules:
            assert module_file(f"metareward.{mod}").is_file(), (backend, mod)
    assert "engines.vllm_engine" not in code_of("judge", "transformers")
    assert "engines.decoding" not in code_of("judge", "vllm")
    with pytest.raises(KeyError, match="unknown engine backend 'tpu'"):
        code_of("generate", "tpu")


def test_an_iterations_key_sees_only_its_own_schedule_values():
    """pairs.rho is a schedule: iteration 1's pairs stage keeps its key when a later entry changes, iteration 2's
    re-keys; the stages that do not read ``pairs`` keep theirs everywhere."""
    before = load_config("smoke", ["pairs.rho=[0.0, 0.3]", "run.iterations=2"])
    after = load_config("smoke", ["pairs.rho=[0.0, 0.5]", "run.iterations=2"])

    def key(cfg, stage, t):
        return contract.stage_key(stage, cfg, t, {"responses": "d1"})

    assert key(before, "pairs", 1) == key(after, "pairs", 1)
    assert key(before, "pairs", 2) != key(after, "pairs", 2)
    assert all(key(before, s, t) == key(after, s, t) for s in ("generate", "judge", "meta_judge", "train")
               for t in (1, 2))


# ------------------------------------------------------------------------------------ damaged stages


def _stage(tmp_path, calls: list):
    """``execute`` of a CPU stage (pairs) that writes two rows and a log, counting its computations."""
    from metareward.records import Prompt
    from metareward.runstore import store

    cfg = load_config("smoke", [f"storage.root={tmp_path}", "run.name=c"])

    def compute(folder: str) -> contract.Output:
        calls.append(folder)
        out = contract.Output()
        contract.write_rows(out, folder, "rows", [Prompt(id="p1", prompt="a"), Prompt(id="p2", prompt="b")])
        out.files["log"] = store.join(folder, "log.json")
        store.write_json(out.files["log"], [{"loss": 0.5}])
        return out

    return lambda: contract.execute("pairs", cfg, 1, {"responses": "d1"}, compute)


@pytest.mark.parametrize("damage,named", [
    (lambda f: (f / "rows.jsonl").unlink(), "rows.jsonl: missing"),
    (lambda f: (f / "rows.jsonl").write_text((f / "rows.jsonl").read_text().replace('"a"', '"A"')),
     "rows.jsonl: content does not match its manifest"),
    (lambda f: (f / "log.json").write_text("[]\n"), "log.json: content does not match its manifest"),
])
def test_a_damaged_stage_is_named_and_recomputed_never_reused(tmp_path, caplog, damage, named):
    calls = []
    run = _stage(tmp_path, calls)
    first = run()
    assert run() == first and len(calls) == 1  # whole: reused
    folder = tmp_path / "c" / "iter_1" / "pairs"
    damage(folder)
    again = run()
    assert len(calls) == 2
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith(f"pairs iter 1: damaged, recomputing: {folder}/{named}")
    assert again.key == first.key and again.digests == first.digests  # the same bytes again
    assert (folder / "rows.jsonl").read_bytes().count(b"\n") == 2 and run() == again and len(calls) == 2


def test_a_manifest_of_the_wrong_shape_counts_as_not_done(tmp_path, caplog):
    calls = []
    run = _stage(tmp_path, calls)
    run()
    manifest = tmp_path / "c" / "iter_1" / "pairs" / "manifest.json"
    manifest.write_text("{}")
    m = run()
    assert len(calls) == 2 and m.stage == "pairs" and json.loads(manifest.read_text())["stage"] == "pairs"
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"pairs iter 1: recomputing: {manifest}: stage: Field required"]


def test_an_unreadable_store_is_not_a_damaged_stage(tmp_path, monkeypatch):
    """A store that does not answer is an error, never a reason to recompute (and overwrite) a finished stage."""
    from metareward.runstore import store

    calls = []
    run = _stage(tmp_path, calls)
    run()

    def outage(folder):
        raise store.StoreError(f"{folder}/manifest.json: read failed after 7 attempts: ConnectTimeoutError")

    monkeypatch.setattr(store, "read_manifest", outage)
    with pytest.raises(store.StoreError, match="read failed after 7 attempts"):
        run()
    assert len(calls) == 1
