"""The evaluator judge: an OpenAI-compatible endpoint or a local engine, behind one small interface, with every
call cached in the run store so a rerun pays nothing.

Two operations, the same two the benchmarks need:

- ``generate(chats, max_tokens)``: the judge's text at temperature 0 (MT-Bench and Arena-Hard judgments);
- ``choice_probs(chats, prefix, choices)``: P(choice) renormalised over ``choices`` after the assistant has
  written ``prefix`` (AlpacaEval's ``m``/``M`` token; a local judge's forced ``Rating: [[``). An endpoint cannot
  be given an assistant prefix, so there ``prefix`` must be empty and the probabilities come from the first
  token's ``top_logprobs`` (alpaca_eval's ``logprob_parser``); None when no choice is among them.

Every judge has an ``identity`` string recorded with each result. The API key is read from the environment
variable the config names, at call time, and never stored, logged or put in an identity.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

from metareward import retry
from metareward.runstore import store


class JudgeError(RuntimeError):
    """A judge that cannot answer (endpoint unreachable, bad response); names the judge, never the key."""


@dataclass(frozen=True)
class Chat:
    """One judge request: an optional system message and the user message."""

    system: str | None
    user: str

    def flat(self) -> str:
        """As one user turn, for local engines (they render a single user turn with the chat template)."""
        return f"{self.system}\n\n{self.user}" if self.system else self.user

    def messages(self) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": self.user}]


# --------------------------------------------------------------------------------------------- local


class LocalJudge:
    """A judge on one of our engines (transformers, vLLM, fake); greedy decoding."""

    kind = "local"

    def __init__(self, engine, label: str, seed: int = 0):
        self.engine, self.seed = engine, seed
        self.identity = f"local:{label}"

    def generate(self, chats: list[Chat], max_tokens: int) -> list[str]:
        from metareward.engines.base import Sampling

        if not chats:
            return []
        outs = self.engine.generate([c.flat() for c in chats], 1, Sampling(0.0, 1.0, max_tokens), self.seed)
        return [cs[0].text for cs in outs]

    def choice_probs(self, chats: list[Chat], prefix: str, choices: list[str]) -> list[list[float] | None]:
        if not chats:
            return []
        return self.engine.choice_probs([c.flat() for c in chats], [prefix] * len(chats), choices)


# --------------------------------------------------------------------------------------------- endpoint


class OpenAIJudge:
    """Any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, a vLLM or SGLang server, ...)."""

    kind = "openai"

    def __init__(self, model: str, base_url: str, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout_s: float = 120.0, max_retries: int = 5, retry_sleep_s: float = 2.0):
        self.model, self.base_url = model, base_url.rstrip("/")
        self.api_key_env, self.timeout_s = api_key_env, timeout_s
        self.max_retries, self.retry_sleep_s = max_retries, retry_sleep_s
        self.identity = f"openai:{model}@{self.base_url}"

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        elif "api.openai.com" in self.base_url:
            raise JudgeError(f"{self.identity}: set the environment variable {self.api_key_env} to the API key")
        return headers

    def _post(self, body: dict) -> dict:
        req = urllib.request.Request(f"{self.base_url}/chat/completions", data=json.dumps(body).encode(),
                                     headers=self._headers(), method="POST")

        def once() -> dict:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read().decode())

        # rate limits and restarts pass: back off and retry (metareward/retry.py says which failures)
        try:
            return retry.retry(once, attempts=self.max_retries + 1, first_delay_s=self.retry_sleep_s,
                               transient=retry.http_fault)
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:200]
            raise JudgeError(f"{self.identity}: HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as e:
            raise JudgeError(f"{self.identity}: {type(e).__name__}: {e}") from None

    def generate(self, chats: list[Chat], max_tokens: int) -> list[str]:
        out = []
        for c in chats:
            resp = self._post({"model": self.model, "messages": c.messages(), "temperature": 0.0, "n": 1,
                               "max_tokens": max_tokens})
            try:
                out.append(resp["choices"][0]["message"]["content"] or "")
            except (KeyError, IndexError, TypeError):
                raise JudgeError(f"{self.identity}: no choices[0].message.content in the response") from None
        return out

    def choice_probs(self, chats: list[Chat], prefix: str, choices: list[str]) -> list[list[float] | None]:
        if prefix:
            raise JudgeError(f"{self.identity}: an endpoint cannot continue an assistant prefix ({prefix!r})")
        out = []
        for c in chats:
            # weighted_alpaca_eval_gpt4_turbo: max_tokens 1, temperature 1, logprobs with the top 5
            resp = self._post({"model": self.model, "messages": c.messages(), "temperature": 1.0, "max_tokens": 1,
                               "logprobs": True, "top_logprobs": 5})
            try:
                top = resp["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            except (KeyError, IndexError, TypeError):
                raise JudgeError(f"{self.identity}: no logprobs in the response (does the server support them?)") \
                    from None
            out.append(renormalise({t["token"]: t["logprob"] for t in top}, choices))
        return out


def renormalise(logprobs: dict[str, float], choices: list[str]) -> list[float] | None:
    """P(choice) / sum over choices from a token -> logprob map; a missing choice has probability 0; None when
    no choice is present (alpaca_eval then records NaN)."""
    present = [logprobs[c] for c in choices if c in logprobs]
    if not present:
        return None
    top = max(present)
    w = [math.exp(logprobs[c] - top) if c in logprobs else 0.0 for c in choices]
    total = sum(w)
    return [x / total for x in w]


# --------------------------------------------------------------------------------------------- cache


class JudgeCache:
    """Judge calls keyed by a digest of (judge identity, operation, messages, parameters).

    Stored as JSONL files under ``folder`` (``<run>/eval_cache/``), one new file per batch of fresh calls, so
    concurrent writers never touch the same file and nothing is ever rewritten. ``folder=None`` keeps it in
    memory only.
    """

    def __init__(self, folder: str | None = None):
        self.folder = folder
        self.data: dict[str, object] = {}
        self.hits = self.misses = 0
        if folder is not None and store.exists(folder):
            fs = store.fs_for(folder)
            for path in sorted(fs.glob(store.join(folder, "calls-*.jsonl"))):
                uri = path if "://" not in folder else f"{folder.split('://')[0]}://{path}"
                for line in store.read_text(uri).splitlines():
                    if line.strip():
                        row = json.loads(line)
                        self.data[row["key"]] = row["value"]

    @staticmethod
    def key(identity: str, op: str, chat: Chat, params: dict) -> str:
        blob = json.dumps([identity, op, chat.system, chat.user, params], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def save(self, fresh: dict[str, object]) -> None:
        self.data.update(fresh)
        if self.folder is not None and fresh:
            rows = "".join(json.dumps({"key": k, "value": v}, ensure_ascii=False) + "\n" for k, v in fresh.items())
            store.write_bytes(store.join(self.folder, f"calls-{uuid.uuid4().hex}.jsonl"), rows.encode())


class CachedJudge:
    """A judge whose answers come from the cache when the same call was made before."""

    def __init__(self, judge, cache: JudgeCache):
        self.judge, self.cache = judge, cache
        self.identity, self.kind = judge.identity, judge.kind

    def _cached(self, op: str, chats: list[Chat], params: dict, compute):
        keys = [self.cache.key(self.identity, op, c, params) for c in chats]
        todo = [i for i, k in enumerate(keys) if k not in self.cache.data]
        self.cache.hits += len(chats) - len(todo)
        self.cache.misses += len(todo)
        if todo:
            values = compute([chats[i] for i in todo])
            self.cache.save({keys[i]: v for i, v in zip(todo, values)})
        return [self.cache.data[k] for k in keys]

    def generate(self, chats: list[Chat], max_tokens: int) -> list[str]:
        return self._cached("generate", chats, {"max_tokens": max_tokens},
                            lambda cs: self.judge.generate(cs, max_tokens))

    def choice_probs(self, chats: list[Chat], prefix: str, choices: list[str]) -> list[list[float] | None]:
        return self._cached("choice_probs", chats, {"prefix": prefix, "choices": choices},
                            lambda cs: self.judge.choice_probs(cs, prefix, choices))
