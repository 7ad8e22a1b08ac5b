"""The CPU (or single-GPU) backend: plain ``transformers``, batches of prompts in token order (sharers together).

``torch`` and ``transformers`` are imported inside the methods, so importing this module is cheap and never
pulls torch in.

Two operations (see `metareward.engines.base`):

- ``generate``: every prompt is rendered as one user turn with the model's chat template and encoded once for its
  n samples; prompts sorted by their tokens fill batches of ``batch_size`` rows (rows = prompts x samples), and
  results are put back in prompt order. Decoding is our own loop (`metareward.engines.decoding`: token
  stretches shared by prompts encoded once and attended to from one copy (`metareward.engines.shared_prefix`),
  a preallocated KV cache, exact top-p over the top 256 tokens, finished rows dropped). On a 2-core CPU two
  batches run at once, one per core. Sample ``j`` of prompt ``i`` draws from its own generator, seeded with
  ``seed[i] + j`` (`metareward.engines.base`), so its randomness does not depend on its batch, the worker count
  or the other prompts; the batches themselves depend on (prompts, n, batch_size) only (`batch_chunks`), so the
  same call on the same machine gives the same texts with one thread or two. Generation stops
  at the chat template's end-of-turn token (``<|im_end|>`` for ChatML models such as SmolLM2, where it is also
  pad and eos).
- ``choice_probs`` (`metareward.engines.choice_scoring`, mixed in): P(choice | chat prompt + assistant prefix),
  renormalised over the choices. The context and
  every ``context + choice`` are tokenised; ``k`` is the longest token prefix shared by all of them (usually the
  whole context). When each choice adds exactly one token after those ``k`` tokens, one forward pass over the
  first ``k`` tokens gives all the answers (the next-token softmax read at the choice tokens). Otherwise each
  choice's continuation (the tokens after ``k``) is scored by its summed log-likelihood. Both compute
  log P(tokens after k | first k tokens), so they agree; the fast path is only a shortcut.

  Why ``k`` and not simply the context: a prefix that ends in a space (``"Winner: Judgment "``) tokenises with
  a lone space token, while ``"Winner: Judgment A"`` merges it into ``" A"``. Reading P("A" | ... " ") would
  score a token sequence the model never saw in training; backing off to the shared prefix scores the natural
  tokenisation of the text. With SmolLM2's tokenizer, ``"Score: "`` + a digit stays on the one-token path
  (digits are split off on their own), while ``"Winner: Judgment "`` + ``"A"/"B"`` backs off by one token and
  is still answered with one forward pass.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import logging
import os
import threading
from typing import Any

from metareward import progress
from metareward.engines.base import (CHATS, COUNTS_PROMPT_TOKENS, SCORES_WHILE_GENERATING, Completion, Sampling,
                                     Seeds, prompt_seeds)
from metareward.engines.choice_scoring import ChoiceScoring, torch_threads
from metareward.engines.memory import keep_freed_memory, release_freed_memory
from metareward.engines.tokens import END_OF_TURN_TOKENS
from metareward.hardware import inference_dtype, usable_cores

_DTYPES = {"float32", "bfloat16", "float16"}
# While batches decode in worker threads, the progress bar is moved this often (seconds).
PROGRESS_EVERY_S = 1.0

log = logging.getLogger(__name__)


# Batches come in multiples of this many whatever the engine's worker count (a third batch on 2 workers ran alone,
# a core idle), so a one-thread replica cuts, and rounds, the very batches a two-worker engine runs side by side.
BATCH_MULTIPLE = 2


def batch_chunks(n: int, per_batch: int) -> list[tuple[int, int]]:
    """[start, end) of each batch over ``n`` sorted prompts: at most ``per_batch`` each, a multiple of
    BATCH_MULTIPLE batches (where there are that many prompts), sizes within one of each other so concurrent batches
    end together. 10 prompts, 4 per batch -> (2, 3, 2, 3)."""
    batches = -(-n // per_batch)
    k = min(n, -(-batches // BATCH_MULTIPLE) * BATCH_MULTIPLE)
    bounds = [n * i // k for i in range(k + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


class TransformersEngine(ChoiceScoring):
    """A `metareward.engines.base.Engine` on ``AutoModelForCausalLM``; CUDA when available, else CPU."""

    capabilities = frozenset({COUNTS_PROMPT_TOKENS, SCORES_WHILE_GENERATING, CHATS})

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "float32",
        batch_size: int = 16,
        decoder: str = "auto",
        trust_remote_code: bool = False,
        seed: int = 0,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if dtype != "auto" and dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES | {'auto'})}, got {dtype!r}")
        # Use every core we may run on unless the user pinned the thread count.
        if "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() < usable_cores():
            torch.set_num_threads(usable_cores())

        self.model_path = model_path
        self.batch_size = batch_size
        self.seed = seed
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        from metareward.engines.decoding import own_decoder

        self.own_decoder = own_decoder(decoder, self.device.type)  # 'auto': ours on a CPU, HF generate on a GPU
        if self.device.type == "cpu":
            keep_freed_memory()
        # On a 2-core CPU, two batches decode at once, each in its own thread on one core: many ops of a decode
        # step are too small to split well over cores, and one batch's Python overhead leaves a core idle; two
        # half batches ran faster than one on two threads (measured: bench/README.md, "Figures behind code
        # choices"). One-batch runs stay in the caller's thread: OpenMP teams outside the main thread are slow.
        # Other core counts keep one batch on all threads: not measured, and one-thread batches on many cores
        # would each be small and each stream the weights.
        self.workers = 2 if self.own_decoder and torch.get_num_threads() == 2 else 1

        tok = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        if tok.chat_template is None:
            raise ValueError(f"{model_path}: the tokenizer has no chat template (an instruct model is needed)")
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self.tokenizer = tok

        self.dtype = inference_dtype(dtype, self.device.type)
        torch_dtype = "auto" if self.dtype == "auto" else getattr(torch, self.dtype)
        log.info("transformers engine on %s, dtype %s (config: %s), %d threads", self.device.type, self.dtype,
                 dtype, torch.get_num_threads())
        model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
        self.model = model.to(self.device).eval()

        stop: set[int] = set()
        eos = self.model.generation_config.eos_token_id
        stop.update(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        if tok.eos_token_id is not None:
            stop.add(tok.eos_token_id)
        vocab = tok.get_vocab()
        stop.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
        self.stop_ids: list[int] = sorted(stop)
        self._stop_set = frozenset(stop)

        import inspect

        self._has_logits_to_keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters

    # ------------------------------------------------------------------------------------------ helpers

    def render(self, prompt: str | list[dict]) -> str:
        """The chat-templated text of one user turn (or a whole message list), ending where the assistant starts
        writing."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _encode(self, text: str) -> list[int]:
        # The chat template already writes every special token (BOS included where the model has one).
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _left_pad(self, seqs: list[list[int]]):
        from metareward.engines.decoding import left_pad

        return left_pad(seqs, self.tokenizer.pad_token_id, self.device)

    def _check(self) -> None:
        if self.model is None:
            raise RuntimeError("engine is closed")

    # ------------------------------------------------------------------------------------------ generate

    def generate_chat(self, conversations: list[list[dict]], n: int, sampling: Sampling,
                      seed: Seeds) -> list[list[Completion]]:
        """`generate` for whole message lists (multi-turn benchmarks such as MT-Bench's second turn)."""
        return self.generate(conversations, n, sampling, seed)  # type: ignore[arg-type]

    def generate(self, prompts: list[str], n: int, sampling: Sampling, seed: Seeds) -> list[list[Completion]]:
        """n samples per prompt with our own decode loop (`metareward.engines.decoding`): each prompt is
        encoded once for its n samples, prompts sharing a prefix share a batch of ``batch_size`` rows; sample
        ``j`` of prompt ``i`` draws from its own stream ``seed[i] + j`` (an int seed: `prompt_seeds`)."""
        self._check()
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not prompts:
            return []
        if not self.own_decoder:
            return self._generate_hf(prompts, n, sampling, seed)
        return [[c for c, _, _ in row] for row in self._decode(prompts, n, sampling, seed)]

    def generate_scored(self, prompts: list[str], n: int, sampling: Sampling, seed: Seeds, suffix: str,
                        choices: list[str]) -> list[list[tuple[Completion, list[float] | None]]]:
        """`generate`, and for each completion ``choice_probs(prompt, text + suffix, choices)`` computed on the
        KV cache the sample already has (no second prefill of prompt + answer).

        A completion's probabilities are None where that shortcut would not score the same token sequence as
        `choice_probs` (its text re-tokenises differently, or a choice is not one token after the suffix);
        callers score those with `choice_probs`. Where they are given, they equal `choice_probs` up to float
        rounding (tests check this).
        """
        self._check()
        if not prompts:
            return []
        probe = self._encode("It is." + suffix)
        head = self._encode("It is.")
        suffix_ids = probe[len(head):]
        choice_ids = []
        for c in choices:
            ids = self._encode("It is." + suffix + c)
            choice_ids.append(ids[-1] if ids[:-1] == probe else None)
        if (not self.own_decoder or not suffix_ids or probe[:len(head)] != head or None in choice_ids
                or len(set(choice_ids)) != len(choice_ids)):
            return [[(c, None) for c in row] for row in self.generate(prompts, n, sampling, seed)]
        rows = self._decode(prompts, n, sampling, seed, suffix_ids=suffix_ids, choice_ids=choice_ids)
        return [[(c, self._checked_probs(p, c, held, suffix, suffix_ids, choices, choice_ids, lp))
                 for c, lp, held in row] for p, row in zip(prompts, rows)]

    def _checked_probs(self, prompt: str, c: Completion, held: list[int], suffix: str, suffix_ids: list[int],
                       choices: list[str], choice_ids: list[int], logprobs: list[float] | None) -> list[float] | None:
        """The shortcut's probabilities, if it scored exactly what `choice_probs` would: render(prompt) + text +
        suffix must tokenise to the prompt, the generated tokens and the suffix tokens, and each choice must add
        its one token after that."""
        import math

        if logprobs is None or not c.text or not all(math.isfinite(x) for x in logprobs):
            return None  # (non-finite: the caller scores it the usual way rather than storing NaN)
        ctx = self.render(prompt) + c.text + suffix
        ctx_ids = self._encode(ctx)
        if ctx_ids != held + suffix_ids:
            return None
        if any(self._encode(ctx + ch) != ctx_ids + [t] for ch, t in zip(choices, choice_ids)):
            return None
        top = max(logprobs)
        w = [math.exp(x - top) for x in logprobs]
        return [x / sum(w) for x in w]

    def _decode(self, prompts, n: int, sampling: Sampling, seed: Seeds, suffix_ids=None, choice_ids=None):
        """Per prompt, n (Completion, choice log-probs or None, token ids the KV cache held when scored) from our
        decode loop."""
        from metareward.engines.decoding import decode

        if self.device.type == "cpu":
            release_freed_memory()
        greedy = sampling.temperature <= 0
        reps = 1 if greedy else n  # greedy samples are identical: decode once, copy
        seeds = prompt_seeds(seed, len(prompts), n)
        per_batch = max(1, self.batch_size // reps)
        ids = [self._encode(self.render(p)) for p in prompts]
        # In token order, so prompts sharing a prefix (a rubric, a question, a response judged in several
        # pairs) share a batch and their shared stretches are encoded and read once (shared_prefix.py); prefill
        # then runs rows of similar length together, so the mixed lengths cost no padding there.
        order = sorted(range(len(prompts)), key=lambda i: (ids[i], i))
        out: list[list] = [[] for _ in prompts]
        scoring = suffix_ids is not None
        bar = progress.tracker(len(prompts) * n, "generate")
        chunks = batch_chunks(len(order), per_batch)
        per_row = n if greedy else 1  # completions a decoded row stands for
        # Rows ended so far in the batches' threads. Only this thread moves the bar: listeners are not thread-safe
        # (a Prefect progress artifact needs the task's context).
        ended, lock = [0], threading.Lock()

        def rows_done(k: int) -> None:
            if self.workers > 1:
                with lock:
                    ended[0] += k
            else:  # batches run in this thread
                bar.advance(k * per_row)

        def run(b: int) -> list:
            chunk = order[chunks[b][0]:chunks[b][1]]
            with torch_threads(1) if self.workers > 1 else contextlib.nullcontext():
                return decode(self.model, [ids[i] for i in chunk], reps, max_new_tokens=sampling.max_new_tokens,
                              temperature=sampling.temperature, top_p=sampling.top_p, stop_ids=self.stop_ids,
                              pad_id=self.tokenizer.pad_token_id, seeds=[seeds[i] for i in chunk],
                              score_suffix=suffix_ids, score_choices=choice_ids, on_rows_done=rows_done)

        if self.workers > 1:
            with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
                futures = [pool.submit(run, b) for b in range(len(chunks))]
                pending, shown = set(futures), 0
                while pending:  # the bar moves as rows end, not only when a whole batch is done
                    _, pending = concurrent.futures.wait(pending, timeout=PROGRESS_EVERY_S)
                    with lock:
                        now = ended[0] * per_row
                    bar.advance(now - shown)
                    shown = now
                results = [f.result() for f in futures]  # (re-raises a batch's error)
        else:
            results = [run(b) for b in range(len(chunks))]
        for b, res in enumerate(results):
            chunk = order[chunks[b][0]:chunks[b][1]]
            toks, lps = res if scoring else (res, [None] * len(res))
            for r, i in enumerate(chunk):
                out[i] = [(self._completion(t), lp, ids[i] + self._body(t))
                          for t, lp in zip(toks[r * reps:(r + 1) * reps], lps[r * reps:(r + 1) * reps])]
        if greedy:
            out = [row * n for row in out]
        return out

    def _generate_hf(self, prompts, n: int, sampling: Sampling, seed: Seeds) -> list[list[Completion]]:
        """``model.generate`` on length-sorted batches of ``batch_size`` rows (the GPU path).

        Only our own decoder gives each sample its own stream: ``model.generate`` draws every row of a batch from
        torch's global generator, so each batch is seeded with its first row's stream (``seed[i] + j``) and a
        sample's text here also depends on which rows share its batch."""
        import torch
        from transformers import GenerationConfig

        greedy = sampling.temperature <= 0
        common: dict[str, Any] = dict(max_new_tokens=sampling.max_new_tokens, eos_token_id=self.stop_ids,
                                      pad_token_id=self.tokenizer.pad_token_id)
        # top_k=0 switches off transformers' default top-k of 50: the paper samples with temperature + top_p.
        gen_cfg = (GenerationConfig(do_sample=False, **common) if greedy else
                   GenerationConfig(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0,
                                    **common))
        ids = [self._encode(self.render(p)) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(ids[i]))
        reps = 1 if greedy else n
        seeds = prompt_seeds(seed, len(prompts), n)
        rows = [(i, j) for i in order for j in range(reps)]
        out: list[list[Completion]] = [[] for _ in prompts]
        bar = progress.tracker(len(rows), "generate")
        with torch.inference_mode():
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start:start + self.batch_size]
                input_ids, mask, _ = self._left_pad([ids[i] for i, _ in chunk])
                torch.manual_seed(seeds[chunk[0][0]] + chunk[0][1])  # the batch's first row's stream
                seqs = self.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=gen_cfg)
                for r, (i, _) in enumerate(chunk):
                    out[i].append(self._completion(seqs[r, input_ids.shape[1]:].tolist()))
                bar.advance(len(chunk))
        return [row * n for row in out] if greedy else out

    def _body(self, toks: list[int]) -> list[int]:
        """A sample's tokens before its end-of-turn token."""
        cut = next((k for k, t in enumerate(toks) if t in self._stop_set), None)
        return toks if cut is None else toks[:cut]

    def _completion(self, toks: list[int]) -> Completion:
        body = self._body(toks)
        text = self.tokenizer.decode(body, skip_special_tokens=True).strip()
        return Completion(text=text, n_tokens=len(body), finish_reason="length" if body is toks else "stop")

    # ------------------------------------------------------------------------------------------ choice_probs

    @property
    def context_length(self) -> int | None:
        """Tokens the model attends over (prompt + completion); None when the config does not say."""
        return getattr(self.model.config, "max_position_embeddings", None) if self.model is not None else None

    def prompt_tokens(self, prompts: list[str]) -> list[int]:
        """Tokens of each chat-templated prompt (what generate feeds the model)."""
        return [len(self._encode(self.render(p))) for p in prompts]

    # ------------------------------------------------------------------------------------------ close

    def close(self) -> None:
        if getattr(self, "model", None) is None:
            return
        import torch

        on_cuda = self.device.type == "cuda"
        self.model = None
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
