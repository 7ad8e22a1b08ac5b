"""VLLMEngine's request path and ``run_together`` driver, without vLLM: a small double of ``vllm.LLM`` (its
``llm_engine``: add_request / step / has_unfinished_requests / abort_request) stands in, so the main suite covers
the threading, the routing of outputs to calls, completion order, errors and the in-flight bound."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from metareward.engines import vllm_engine
from metareward.engines.base import Sampling, run_together
from metareward.engines.vllm_engine import JobsStopped, VLLMEngine

NEVER = 10**9  # steps: a request that only ends when it is aborted
HOT = Sampling(temperature=0.8, top_p=0.95, max_new_tokens=3)  # the fake decodes max_new_tokens steps


class FakeParams(SimpleNamespace):
    """Stands in for vllm.SamplingParams (keyword fields only)."""


class FakeTokenizer:
    eos_token_id = 2

    def get_vocab(self):
        return {"<|im_end|>": 2}

    def apply_chat_template(self, conversation, add_generation_prompt, tokenize):
        text = "|".join(m["content"] for m in conversation)
        return {"input_ids": [1] + [ord(c) for c in text]} if tokenize else "<s>" + text


def _outputs(rid, prompt, params):
    """A finished RequestOutput double: one child per sample, its text naming the prompt and the child's stream."""
    tag = "".join(chr(i) for i in prompt["prompt_token_ids"][1:])
    seed = params.seed or 0
    children = [SimpleNamespace(text=f"{tag}@{seed + j}", token_ids=[7] * params.max_tokens, finish_reason="length")
                for j in range(params.n)]
    return SimpleNamespace(request_id=rid, finished=True, outputs=children)


class FakeCore:
    """vLLM's LLMEngine, reduced: a request finishes after ``max_tokens`` steps (or fails to add on 'reject')."""

    def __init__(self, delay=0.0):
        self.live: dict[str, list] = {}  # request id -> [prompt, params, steps left]
        self.delay = delay
        self.steps = 0
        self.peak_prompts = 0  # most distinct prompts live in one step: how much the scheduler saw at once
        self.aborted: list[str] = []
        self.fail_at_step: int | None = None
        self.deadline = time.monotonic() + 20  # a driver that never stops its jobs fails the test, not hangs it
        self.expired = False

    def add_request(self, rid, prompt, params):
        assert rid not in self.live
        if "reject" in "".join(chr(i) for i in prompt["prompt_token_ids"]):
            raise ValueError("prompt rejected")
        self.live[rid] = [prompt, params, params.max_tokens]
        return rid + "-internal"

    def has_unfinished_requests(self):
        return bool(self.live)

    def abort_request(self, ids, internal=False):
        for rid in ids:
            if self.live.pop(rid, None) is not None:
                self.aborted.append(rid)

    def step(self):
        self.steps += 1
        if self.steps == self.fail_at_step:
            raise RuntimeError("engine died")
        if time.monotonic() > self.deadline:
            self.expired = True
            raise RuntimeError("fake engine: the test's deadline passed")
        live_prompts = {tuple(p["prompt_token_ids"]) for p, _, _ in self.live.values()}
        self.peak_prompts = max(self.peak_prompts, len(live_prompts))
        time.sleep(self.delay)
        done = []
        for rid, req in list(self.live.items()):
            req[2] -= 1
            if req[2] <= 0:
                del self.live[rid]
                done.append(_outputs(rid, req[0], req[1]))
        return done


class FakeLLM:
    """vllm.LLM, reduced: ``generate`` is one blocking call on its own engine; ``llm_engine`` is the driver's."""

    def __init__(self, delay=0.0):
        self.llm_engine = FakeCore(delay)
        self.direct_calls = 0

    def get_tokenizer(self):
        return FakeTokenizer()

    def generate(self, prompts, params, use_tqdm=True):
        self.direct_calls += 1
        return [_outputs(str(i), p, sp) for i, (p, sp) in enumerate(zip(prompts, params))]


@pytest.fixture(autouse=True)
def fake_sampling_params(monkeypatch):
    monkeypatch.setattr(vllm_engine, "_vllm_sampling", lambda: (FakeParams, SimpleNamespace(FINAL_ONLY="final")))


def _engine(max_inflight_jobs=64, delay=0.0) -> VLLMEngine:
    eng = object.__new__(VLLMEngine)
    eng._setup(FakeLLM(delay), seed=0, max_inflight_jobs=max_inflight_jobs)
    return eng


def _gen(eng, prompts, seed=0, sampling=HOT, n=2):
    return [[c.text for c in row] for row in eng.generate(prompts, n, sampling, seed=seed)]


def _job_threads():
    return [t for t in threading.enumerate() if t.name.startswith("vllm-job")]


# ------------------------------------------------------------------------------------------ requests and seeds


def test_generate_outside_run_together_is_one_blocking_call():
    eng = _engine()
    assert _gen(eng, ["ab", "cd"], seed=10) == [["ab@10", "ab@11"], ["cd@12", "cd@13"]]
    assert eng.llm.direct_calls == 1 and eng.llm.llm_engine.steps == 0


def test_every_sample_has_its_own_stream():
    """The old bug: request i seeded seed + i, so sample 1 of prompt i was sample 0 of prompt i + 1."""
    eng = _engine()
    [[a0, a1], [b0, b1]] = _gen(eng, ["same", "same"], seed=0)
    assert a1 != b0 and len({a0, a1, b0, b1}) == 4
    assert _gen(eng, ["x", "y"], seed=[5, 100]) == [["x@5", "x@6"], ["y@100", "y@101"]]


def test_requests_are_token_ids_reported_once_finished():
    eng = _engine()
    seen = []
    eng.llm.generate = lambda prompts, params, use_tqdm: seen.append((prompts, params)) or FakeLLM.generate(
        eng.llm, prompts, params)
    eng.generate(["hi"], 3, HOT, seed=4)
    [(prompts, params)] = seen
    assert prompts == [{"prompt_token_ids": [1, ord("h"), ord("i")]}]
    assert params[0].n == 3 and params[0].seed == 4 and params[0].output_kind == "final"


# ------------------------------------------------------------------------------------------ run_together


def test_run_together_gives_every_job_its_rows_as_sequential_calls_do():
    eng = _engine()
    shards = [[f"p{i}a", f"p{i}b"] for i in range(6)]
    jobs = [lambda s=s, i=i: _gen(eng, s, seed=100 * i) for i, s in enumerate(shards)]
    got = dict(run_together(eng, jobs))
    assert got == {i: _gen(eng, s, seed=100 * i) for i, s in enumerate(shards)}
    assert eng.llm.direct_calls == len(shards)  # the sequential reference only: run_together used the driver
    assert eng.llm.llm_engine.steps > 0 and not eng.llm.llm_engine.live
    assert not _job_threads()


def test_a_job_may_make_several_calls():
    eng = _engine()

    def job(i):
        first = _gen(eng, [f"q{i}"], seed=i)
        return first + _gen(eng, [f"r{i}"], seed=i, n=1)

    got = dict(eng.run_together([lambda i=i: job(i) for i in range(3)]))
    assert got == {i: [[f"q{i}@{i}", f"q{i}@{i + 1}"], [f"r{i}@{i}"]] for i in range(3)}


def test_results_come_in_completion_order_while_others_still_run():
    eng = _engine(delay=0.001)
    gate = threading.Event()

    def slow():
        assert gate.wait(10), "job 1 was not yielded before job 0 ended"
        return _gen(eng, ["slow"])

    order = []
    for i, rows in eng.run_together([slow, lambda: _gen(eng, ["fast"])]):
        order.append(i)
        gate.set()  # job 0 goes on only once job 1 has been handed to the caller
    assert order == [1, 0]


def test_in_flight_jobs_are_bounded_and_seen_together():
    eng = _engine(max_inflight_jobs=3, delay=0.001)
    barrier = threading.Barrier(3, timeout=10)  # passes only if 3 jobs can run at once
    lock = threading.Lock()
    running = [0, 0]  # now, peak

    def job(i):
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        try:
            barrier.wait()
            return _gen(eng, [f"j{i}"], sampling=Sampling(temperature=0.8, max_new_tokens=50), n=1)
        finally:
            with lock:
                running[0] -= 1

    got = dict(eng.run_together([lambda i=i: job(i) for i in range(9)]))
    assert sorted(got) == list(range(9))
    assert running[1] == 3  # never more than max_inflight_jobs
    assert eng.llm.llm_engine.peak_prompts == 3  # vLLM's scheduler had all in-flight jobs' requests at once
    assert not _job_threads()


def test_a_failing_job_stops_the_others_then_raises():
    eng = _engine(max_inflight_jobs=2)
    started, stopped = set(), []

    def waiting(i):
        started.add(i)
        try:
            return _gen(eng, [f"w{i}"], sampling=Sampling(max_new_tokens=NEVER))
        except JobsStopped:
            stopped.append(i)
            raise

    def failing():
        started.add(1)
        _gen(eng, ["quick"])
        raise ValueError("bad shard")

    jobs = [lambda: waiting(0), failing] + [lambda i=i: waiting(i) for i in range(2, 6)]
    with pytest.raises(ValueError, match="bad shard"):
        list(eng.run_together(jobs))
    assert started <= {0, 1, 2}  # job 1's thread may pick job 2 before the driver stops; no later job starts
    assert 0 in stopped and set(stopped) == started - {1}
    core = eng.llm.llm_engine
    assert not core.expired  # stopped by the failure, not by the fake's deadline
    assert not core.live and core.aborted  # the stopped jobs' requests left vLLM
    assert not _job_threads()
    assert _gen(eng, ["after"]) == [["after@0", "after@1"]]  # the engine is usable again


def test_jobs_that_end_well_are_still_yielded_before_the_error():
    eng = _engine()
    release = threading.Event()

    def fails():
        release.wait(10)
        raise KeyError("late")

    got = []
    with pytest.raises(KeyError):
        for i, rows in eng.run_together([lambda: _gen(eng, ["ok"]), fails]):
            got.append(i)
            release.set()
    assert got == [0]


def test_a_rejected_request_fails_only_its_call():
    eng = _engine()

    def careful():
        try:
            _gen(eng, ["fine", "reject me"])
        except ValueError as e:
            return str(e)

    got = dict(eng.run_together([careful, lambda: _gen(eng, ["other"])]))
    assert got == {0: "prompt rejected", 1: [["other@0", "other@1"]]}
    assert not eng.llm.llm_engine.live  # the call's first, accepted request was aborted with it


def test_an_engine_failure_stops_the_jobs_and_is_raised():
    eng = _engine()
    eng.llm.llm_engine.fail_at_step = 2
    jobs = [lambda i=i: _gen(eng, [f"e{i}"], sampling=Sampling(max_new_tokens=NEVER)) for i in range(4)]
    with pytest.raises(RuntimeError, match="engine died"):
        list(eng.run_together(jobs))
    assert not _job_threads()


def test_closing_the_generator_early_stops_the_jobs():
    eng = _engine()
    jobs = [lambda: _gen(eng, ["first"])] + [
        lambda i=i: _gen(eng, [f"never{i}"], sampling=Sampling(max_new_tokens=NEVER)) for i in range(3)]
    it = eng.run_together(jobs)
    assert next(it)[0] == 0
    it.close()
    assert not _job_threads() and not eng.llm.llm_engine.live
    assert eng._driver is None


def test_calls_from_the_driving_thread_are_refused():
    eng = _engine()
    with pytest.raises(RuntimeError, match="from its jobs only"):
        for _ in eng.run_together([lambda: _gen(eng, ["a"]), lambda: _gen(eng, ["b"])]):
            eng.generate(["c"], 1, HOT, seed=0)


def test_empty_calls_and_jobs():
    eng = _engine()
    assert list(eng.run_together([])) == []
    assert dict(eng.run_together([lambda: eng.generate([], 2, HOT, seed=0)])) == {0: []}
    with pytest.raises(ValueError):
        _engine(max_inflight_jobs=0)
