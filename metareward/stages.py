"""One function per stage of an iteration: (config, t, inputs) -> Manifest. Runnable without Prefect.

Every stage goes through `execute`, which gives it the run-store contract:

1. the stage's *key* is a digest of its inputs' digests, the config sections it reads and its code;
2. if ``<run>/iter_<t>/<stage>/manifest.json`` exists with that key, the stage is done: return it;
3. otherwise drop any old manifest, compute, write the data, then write the manifest last.

So a rerun skips finished work even without Prefect's cache, and a crash never leaves a stage marked done.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from metareward import progress, prompt_sets, shards, store
from metareward.config import RunConfig, schedule
from metareward.engines.base import Sampling
from metareward.records import Judgment, Manifest, MetaVerdict, ModelRef, PreferencePair, Prompt, Response

log = logging.getLogger("metareward")

# The config sections each stage reads: changing dpo.beta re-keys train and what follows, nothing before it.
SECTIONS = {
    "prompts": ("prompts",),
    "generate": ("actor", "engine", "model"),
    "judge": ("judge", "engine", "model"),
    # l2 and position_weights are read by the pairs stage only: changing them must not re-run the meta-judge
    "meta_judge": ("meta_judge.sampling", "meta_judge.scoring", "meta_judge.strip_score", "engine", "model"),
    "pairs": ("pairs", "meta_judge"),
    "train": ("dpo", "model"),
    "benchmark": ("eval", "judge", "engine", "model"),
    # run once before iteration 1 (iteration-0 folder): see metareward/bootstrap.py
    "prompt_pool": ("prompt_pool", "prompts", "engine", "model"),
    "eft": ("eft", "judge", "engine", "model"),
}
# The modules whose source is part of a stage's key, so a code change recomputes what it affects. The engines
# include the CPU engine's decode loop and attention: they decide the sampled texts as much as the engine does.
ENGINES = ("engines/transformers_engine", "engines/decoding", "engines/shared_prefix", "engines/vllm_engine",
           "engines/fake")
CODE = {
    "prompts": ("prompt_sets", "prompt_sources", "dedupe", "decontam"),
    "prompt_pool": ("bootstrap", "prompt_pool", "prompt_sets", "prompt_sources", "dedupe", "decontam", *ENGINES),
    "eft": ("bootstrap", "eft", "sft", "parsing", "prompts", *ENGINES),
    "generate": ENGINES,
    "judge": (*ENGINES, "parsing", "prompts"),
    "meta_judge": (*ENGINES, "parsing", "prompts", "pairs"),
    "pairs": ("pairs", "scoring", "prompts"),
    "train": ("train",),
    "benchmark": (*ENGINES, "parsing", "prompts", "evals/stage", "evals/bench", "evals/judges", "evals/mtbench",
                  "evals/alpaca", "evals/arena_hard", "evals/agreement", "evals/io"),
}
VERSIONED = ("torch", "transformers", "trl", "vllm", "prefect", "pydantic")


class StageError(RuntimeError):
    """A stage that cannot produce its output (e.g. no preference pair survived); names the stage."""


@dataclass
class Output:
    """What a stage body returns; `execute` turns it into the Manifest."""

    files: dict[str, str] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    def add(self, name: str, uri: str, digest: str) -> None:
        """A file the stage wrote, with its digest."""
        self.files[name], self.digests[name] = uri, digest

    def merge(self, other: Output) -> None:
        for mine, theirs in ((self.files, other.files), (self.digests, other.digests), (self.counts, other.counts),
                             (self.stats, other.stats)):
            mine.update(theirs)


# ----------------------------------------------------------------------------------------------- keys


def _code_digest(stage: str) -> str:
    h = hashlib.sha256()
    root = Path(__file__).parent
    for mod in ("stages",) + CODE[stage]:
        f = root / f"{mod}.py"
        h.update(f.read_bytes() if f.is_file() else mod.encode())
    return h.hexdigest()[:16]


def stage_key(stage: str, cfg: RunConfig, t: int, inputs: dict[str, str]) -> str:
    """The digest that decides whether a stage's stored output can be reused."""
    parts = [stage, str(t), str(cfg.run.seed), cfg.digest(*SECTIONS[stage]), _code_digest(stage)]
    parts += [f"{k}={v}" for k, v in sorted(inputs.items())]
    if stage == "pairs":  # the per-iteration schedules are resolved here so other iterations don't re-key
        parts.append(repr(_pair_settings(cfg, t)))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def execute(stage: str, cfg: RunConfig, t: int, inputs: dict[str, str], body: Callable[[str], Output]) -> Manifest:
    """Run ``body(stage_folder)`` unless a manifest with the same key exists; write the manifest last."""
    folder = store.stage_uri(cfg.storage.root, cfg.run.name, t, stage)
    key = stage_key(stage, cfg, t, inputs)
    done = store.read_manifest(folder)
    if done is not None and done.key == key:
        log.info("%s iter %d: done already (manifest %s), skipping", stage, t, key)
        return done
    store.invalidate(folder)
    store.remove_temporaries(folder)  # half-written files of an interrupted attempt
    log.info("%s iter %d: running", stage, t)
    start = time.perf_counter()
    try:
        with progress.stage(f"{stage} iter {t}"):
            out = body(folder)
    except Exception as e:
        from metareward import faults

        if faults.is_oom(e):  # name the setting to lower; finished shards and stages stay for the rerun
            raise StageError(faults.oom_message(stage, t, cfg, e)) from e
        raise
    manifest = Manifest(
        stage=stage, iteration=t, run=cfg.run.name, key=key, uri=folder, files=out.files, digests=out.digests,
        counts=out.counts, stats=out.stats, inputs=inputs, config_digest=cfg.digest(), versions=_versions(),
        seed=cfg.run.seed, duration_s=round(time.perf_counter() - start, 3),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    store.write_manifest(manifest)
    store.remove(store.join(folder, shards.SHARDS))  # scratch space of a finished stage
    return manifest


def _write(out: Output, folder: str, name: str, rows) -> None:
    uri = store.join(folder, f"{name}.jsonl")
    out.add(name, uri, store.write_jsonl(uri, rows))


# --------------------------------------------------------------------------------------------- models


def base_model(cfg: RunConfig) -> ModelRef:
    """M_0: the configured seed model, or the embedded SmolLM2 converted once into the cache."""
    from metareward.models import EMBEDDED_DIST, resolve_model

    uri = resolve_model(cfg.model.path, cfg.storage.model_cache)
    if cfg.model.path is None:
        ident = f"embedded:{EMBEDDED_DIST}=={metadata.version(EMBEDDED_DIST)}"
    else:
        ident = f"path:{cfg.model.path}"
    return ModelRef(uri=uri, digest=hashlib.sha256(ident.encode()).hexdigest()[:16], iteration=0)


def initial_model(cfg: RunConfig) -> ModelRef:
    """M_0 as the iterations see it: the EFT'd seed model when EFT is on (its stage must have run), else the seed."""
    if not cfg.eft.enabled:
        return base_model(cfg)
    m = store.read_manifest(store.stage_uri(cfg.storage.root, cfg.run.name, 0, "eft"))
    if m is None:
        raise StageError("eft iter 0: no manifest in the run store (M_0 is the EFT stage's model)")
    return model_of(m)


def _engine(cfg: RunConfig, model: ModelRef):
    from metareward.engines import open_engine

    from metareward.remote import local_model

    path = local_model(model.uri, model.digest, cfg.storage.model_cache)  # an s3:// model is pulled once
    return open_engine(cfg.engine.backend, path, engine_cfg=cfg.engine, model_cfg=cfg.model, seed=cfg.run.seed)


def _sampling(s) -> Sampling:
    return Sampling(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens)


# ---------------------------------------------------------------------------------------------- stages


def prompts(cfg: RunConfig, t: int, pool_m: Manifest | None = None) -> Manifest:
    """Read and clean the prompt source (duplicates, length, benchmark overlap), hold out the eval prompts, and
    pick iteration t's training prompts from the source's rest or, when given, the generated pool."""
    from metareward import prompt_sources

    rows, where = prompt_sources.read_source(cfg.prompts)
    inputs = {"source": prompt_sources.source_digest(rows, cfg.prompts)}
    if pool_m is not None:
        inputs["pool"] = pool_m.digest

    def body(folder: str) -> Output:
        train, held_out, counts = prompt_sources.prepare(rows, cfg.prompts)
        if pool_m is not None:
            train = store.read_jsonl(pool_m.files["pool"], Prompt)
        picked = prompt_sets.for_iteration(train, t, cfg.prompts.per_iteration, cfg.run.seed)
        reused = prompt_sets.reused_count(len(train), t, cfg.prompts.per_iteration)
        if reused:  # sampling is without replacement only until the pool runs out
            log.warning("prompts iter %d: %d of %d prompts were used in earlier iterations (pool of %d)", t, reused,
                        len(picked), len(train))
        out = Output(counts={"read": len(rows), **counts, "pool": len(train), "prompts": len(picked),
                             "reused_prompts": reused, "eval_prompts": len(held_out)},
                     stats={"source": where, "pool": "generated" if pool_m is not None else "source"})
        _write(out, folder, "prompts", picked)
        _write(out, folder, "eval", held_out)
        return out

    return execute("prompts", cfg, t, inputs, body)


def generate(cfg: RunConfig, t: int, model: ModelRef, prompts_m: Manifest) -> Manifest:
    """Actor: K sampled responses per prompt from M_{t-1}, committed in shards of engine.shard_size prompts."""
    inputs = {"model": model.digest, "prompts": prompts_m.digest}

    def body(folder: str) -> Output:
        rows = store.read_jsonl(prompts_m.files["prompts"], Prompt)
        engine = _LazyEngine(cfg, model)

        def work(chunk: list[Prompt], seed: int) -> list[Response]:
            chunk = fits_context(engine.get(), chunk, [p.prompt for p in chunk], cfg.actor.sampling.max_new_tokens)
            outs = engine.get().generate([p.prompt for p in chunk], cfg.actor.k, _sampling(cfg.actor.sampling), seed)
            return [Response(id=f"{p.id}-r{k}", prompt_id=p.id, prompt=p.prompt, text=c.text, n_tokens=c.n_tokens,
                             finish_reason=c.finish_reason) for p, cs in zip(chunk, outs) for k, c in enumerate(cs)]

        try:
            start = time.perf_counter()
            responses, shard_counts = _sharded(cfg, t, "generate", inputs, folder, rows, work, Response)
            secs = time.perf_counter() - start
        finally:
            engine.close()
        out = Output(counts={"prompts": len(rows), "responses": len(responses),
                             # skipped in `work`, so counted from what is missing (finished shards included)
                             "too_long_for_context": len(rows) - len({r.prompt_id for r in responses}),
                             "empty": sum(not r.text.strip() for r in responses),
                             "truncated": sum(r.finish_reason == "length" for r in responses)},
                     stats={**_gen_stats(responses, secs), **shard_counts})
        _write(out, folder, "responses", responses)
        return out

    return execute("generate", cfg, t, inputs, body)


def fits_context(engine, items: list, texts: list[str], max_new_tokens: int) -> list:
    """The items whose prompt plus ``max_new_tokens`` fits the engine's context (skipped ones are counted by the
    stage from what is missing); every item when the engine states no context length."""
    limit = getattr(engine, "context_length", None)
    if not limit or not hasattr(engine, "prompt_tokens") or not items:
        return items
    kept = [i for i, n in zip(items, engine.prompt_tokens(texts)) if n + max_new_tokens <= limit]
    if len(kept) < len(items):
        log.warning("%d of %d prompts are longer than the context (%d tokens with %d new ones): skipped",
                    len(items) - len(kept), len(items), limit, max_new_tokens)
    return kept


class _LazyEngine:
    """The stage's engine, opened on first use: a resumed stage whose shards are all done loads no model."""

    def __init__(self, cfg: RunConfig, model: ModelRef):
        self.cfg, self.model, self.engine = cfg, model, None

    def get(self):
        if self.engine is None:
            self.engine = _engine(self.cfg, self.model)
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


def _sharded(cfg: RunConfig, t: int, stage: str, inputs: dict[str, str], folder: str, items, work, model):
    """`shards.run_sharded` in this stage's key-named shard folder."""
    where = shards.shard_dir(folder, stage_key(stage, cfg, t, inputs))
    return shards.run_sharded(where, items, cfg.engine.shard_size, work, model, cfg.run.seed)


def _gen_stats(responses: list[Response], secs: float) -> dict:
    tokens = sum(r.n_tokens for r in responses)
    return {"mean_chars": _mean([len(r.text) for r in responses]), "generated_tokens": tokens,
            "seconds": round(secs, 2), "tokens_per_s": round(tokens / secs, 1) if secs > 0 else None}


def _mean(xs) -> float | None:
    xs = list(xs)
    return round(sum(xs) / len(xs), 4) if xs else None


def _judge_responses(engine, cfg: RunConfig, responses: list[Response], n: int,
                     seed: int | None = None) -> list[Judgment]:
    """N judgments per response with the paper's prompt, scored by parsing or by expected value."""
    from metareward import parsing
    from metareward.prompts import SCORE_CHOICES, SCORE_PREFIX, render_judge

    seed = cfg.run.seed if seed is None else seed
    texts = [render_judge(r.prompt, r.text) for r in responses]
    sampling = cfg.judge.sampling
    shortcut = (cfg.judge.scoring == "expected" and sampling.max_new_tokens > 0
                and hasattr(engine, "generate_scored"))
    if shortcut:  # score each justification on the KV cache that wrote it (no second prefill)
        scored = engine.generate_scored(texts, n, _sampling(sampling), seed, "\n" + SCORE_PREFIX,
                                        list(SCORE_CHOICES))
        outs = [[c for c, _ in row] for row in scored]
        early = [p for row in scored for _, p in row]
    else:
        outs = _reason(engine, texts, n, sampling, seed)
        early = [None] * sum(len(cs) for cs in outs)
    flat = [(r, text, j, c.text) for r, text, cs in zip(responses, texts, outs) for j, c in enumerate(cs)]
    if cfg.judge.scoring == "parse":
        return [Judgment(id=f"{r.id}-j{j}", response_id=r.id, prompt_id=r.prompt_id, text=out,
                         score=parsing.parse_score(out)) for r, _, j, out in flat]
    # expected: keep the model's justification, force "Score: " and read P(0..5) (AlpacaEval-style weighting)
    prefixes = [_forced(parsing.justification(out), SCORE_PREFIX) for *_, out in flat]
    # The shortcut scored out + "\nScore: "; it stands only where that is the prefix (nothing was cut off).
    probs = [p if p is not None and pre == f"{out}\n{SCORE_PREFIX}" else None
             for p, pre, (*_, out) in zip(early, prefixes, flat)]
    todo = [i for i, p in enumerate(probs) if p is None]
    if shortcut:
        log.info("judge: %d of %d scores read on the sample's own KV cache, %d re-scored", len(probs) - len(todo),
                 len(probs), len(todo))
    for i, p in zip(todo, engine.choice_probs([flat[i][1] for i in todo], [prefixes[i] for i in todo],
                                              SCORE_CHOICES) if todo else []):
        probs[i] = p
    rows = []
    for (r, _, j, _), prefix, p in zip(flat, prefixes, probs):
        best = max(range(len(p)), key=p.__getitem__)
        score = sum(i * pi for i, pi in enumerate(p))
        rows.append(Judgment(id=f"{r.id}-j{j}", response_id=r.id, prompt_id=r.prompt_id,
                             text=prefix + SCORE_CHOICES[best], score=round(score, 6),
                             score_probs=[round(x, 6) for x in p]))
    return rows


def _reason(engine, texts: list[str], n: int, sampling, seed: int):
    """The judge's or meta-judge's free text; with max_new_tokens=0 ('expected' mode) there is none."""
    if sampling.max_new_tokens == 0:
        from metareward.engines.base import Completion

        return [[Completion(text="", n_tokens=0, finish_reason="length")] * n for _ in texts]
    return engine.generate(texts, n, _sampling(sampling), seed)


def _forced(reasoning: str, prefix: str) -> str:
    return f"{reasoning}\n{prefix}" if reasoning else prefix


def judge(cfg: RunConfig, t: int, model: ModelRef, generate_m: Manifest) -> Manifest:
    """Judge: N judgments per response with the 5-point additive rubric; scores parsed (or expected)."""

    inputs = {"model": model.digest, "responses": generate_m.digest}

    def body(folder: str) -> Output:
        responses = store.read_jsonl(generate_m.files["responses"], Response)
        engine = _LazyEngine(cfg, model)

        def work(chunk: list[Response], seed: int) -> list[Judgment]:
            return _judge_responses(engine.get(), cfg, _judgeable(engine.get(), cfg, chunk), cfg.judge.n, seed)

        try:
            start = time.perf_counter()
            rows, shard_counts = _sharded(cfg, t, "judge", inputs, folder, responses, work, Judgment)
            secs = time.perf_counter() - start
        finally:
            engine.close()
        out = Output(counts={**_score_counts(rows),
                             "too_long_for_context": len(responses) - len({j.response_id for j in rows})},
                     stats={**_score_stats(rows), "seconds": round(secs, 2), **shard_counts})
        _write(out, folder, "judgments", rows)
        return out

    m = execute("judge", cfg, t, inputs, body)
    check_health(cfg, t, m)
    return m


def _judgeable(engine, cfg: RunConfig, responses: list[Response]) -> list[Response]:
    """Responses whose judge prompt fits the context (the rest get no judgment: counted, then 'unscored')."""
    from metareward.prompts import render_judge

    extra = 2 if cfg.judge.scoring == "expected" else 0  # the forced "Score: " and the digit
    return fits_context(engine, responses, [render_judge(r.prompt, r.text) for r in responses],
                        cfg.judge.sampling.max_new_tokens + extra)


def check_health(cfg: RunConfig, t: int, m: Manifest) -> None:
    """The health gates of a judge or pairs stage's output (metareward/health.py): the report goes to
    ``iter_<t>/health.json`` either way; a failed gate raises StageError naming it. The stage's manifest is
    already written, so a rerun with other thresholds reuses the stage."""
    from metareward import health
    from metareward.redact import redact_obj

    if not cfg.health.enabled:
        return
    if m.stage == "judge":
        if "judgments" not in m.files:  # a manifest written by hand or by another tool: say which, don't KeyError
            raise StageError(f"judge iter {t}: the manifest at {m.uri} lists no judgments file "
                             f"(files: {sorted(m.files)}); the health gates need it (or set health.enabled=false)")
        metrics = health.judge_metrics(store.read_jsonl(m.files["judgments"], Judgment))
        failed = health.failed_gates(metrics, cfg.health)
    else:
        metrics = {"pairs": m.counts.get("pairs", 0)}
        failed = health.pairs_gate(metrics["pairs"], cfg.health)
    uri = store.join(store.run_uri(cfg.storage.root, cfg.run.name), f"iter_{t}", "health.json")
    report = store.read_json(uri) if store.exists(uri) else {}
    report[m.stage] = {"passed": not failed, "failed": failed, "metrics": metrics, "key": m.key,
                       "thresholds": cfg.health.model_dump(mode="json")}
    store.write_json(uri, redact_obj(report))
    if failed:
        raise StageError(f"{m.stage} iter {t}: health gate failed: {'; '.join(failed)} (report: {uri})")


def _score_counts(rows: list[Judgment]) -> dict[str, int]:
    valid = sum(j.score is not None for j in rows)
    return {"judgments": len(rows), "parsed": valid, "unparsed": len(rows) - valid}


def _score_stats(rows: list[Judgment]) -> dict:
    scores = [j.score for j in rows if j.score is not None]
    hist = Counter(str(math.floor(s + 0.5)) for s in scores)  # rounded to the rubric's integer points
    return {"parse_rate": round(len(scores) / len(rows), 4) if rows else None, "mean_score": _mean(scores),
            "score_histogram": {str(k): hist.get(str(k), 0) for k in range(6)},
            "share_max_score": round(sum(s >= 4.5 for s in scores) / len(scores), 4) if scores else None}


def meta_judge(cfg: RunConfig, t: int, model: ModelRef, generate_m: Manifest, judge_m: Manifest) -> Manifest:
    """Meta-judge: every pair of judgments of each prompt's most-disputed response, in both orders."""
    from metareward import pairs as P

    inputs = {"model": model.digest, "responses": generate_m.digest, "judgments": judge_m.digest}

    def body(folder: str) -> Output:
        responses = store.read_jsonl(generate_m.files["responses"], Response)
        judgments = store.read_jsonl(judge_m.files["judgments"], Judgment)
        targets, skipped = P.meta_targets(responses, judgments, cfg.run.seed)
        requests = _meta_requests(cfg, targets, responses, judgments)
        engine = _LazyEngine(cfg, model)
        try:
            start = time.perf_counter()
            verdicts, shard_counts = _sharded(cfg, t, "meta_judge", inputs, folder, requests,
                                              lambda chunk, seed: _run_meta(engine.get(), cfg, chunk, seed),
                                              MetaVerdict)
            secs = time.perf_counter() - start
        finally:
            engine.close()
        decided = sum(v.winner is not None for v in verdicts)
        out = Output(counts={"targets": len(targets), "calls": len(verdicts), "decided": decided,
                             "undecided": len(verdicts) - decided, **{f"skip_{k}": v for k, v in skipped.items()}},
                     stats={"seconds": round(secs, 2), **shard_counts,
                            "p_first_wins": _mean(v.p_a for v in verdicts if v.p_a is not None)})
        _write(out, folder, "verdicts", verdicts)
        return out

    return execute("meta_judge", cfg, t, inputs, body)


def _meta_requests(cfg, targets, responses, judgments) -> list[tuple[Response, Judgment, Judgment, str]]:
    from metareward import pairs as P
    from metareward.parsing import strip_score
    from metareward.prompts import render_meta_judge

    by_resp = {r.id: r for r in responses}
    by_id = {j.id: j for j in judgments}
    requests = []
    for prompt_id in sorted(targets):
        r = by_resp[targets[prompt_id]]
        mine = [j for j in judgments if j.response_id == r.id]
        for a_id, b_id in P.meta_judge_requests(r, mine):
            a, b = by_id[a_id], by_id[b_id]
            ta, tb = (strip_score(a.text), strip_score(b.text)) if cfg.meta_judge.strip_score else (a.text, b.text)
            requests.append((r, a, b, render_meta_judge(r.prompt, r.text, ta, tb)))
    return requests


def _run_meta(engine, cfg: RunConfig, requests, seed: int | None = None) -> list[MetaVerdict]:
    from metareward import parsing
    from metareward.prompts import VERDICT_CHOICES, VERDICT_PREFIX

    texts = [req[3] for req in requests]
    outs = [cs[0].text for cs in _reason(engine, texts, 1, cfg.meta_judge.sampling,
                                         cfg.run.seed if seed is None else seed)]
    if cfg.meta_judge.scoring == "parse":
        winners = [parsing.parse_verdict(o) for o in outs]
        p_as = [None if w is None else float(w == "A") for w in winners]
    else:  # expected: force "Winner: Judgment " and compare P(A) with P(B)
        outs = [_forced(parsing.verdict_reasoning(o), VERDICT_PREFIX) for o in outs]
        p_as = [round(p[0], 6) for p in engine.choice_probs(texts, outs, VERDICT_CHOICES)]
        winners = ["A" if p > 0.5 else "B" if p < 0.5 else None for p in p_as]
        outs = [o + (w or "") for o, w in zip(outs, winners)]
    return [MetaVerdict(prompt_id=r.prompt_id, response_id=r.id, a_id=a.id, b_id=b.id, text=o, winner=w, p_a=p)
            for (r, a, b, _), o, w, p in zip(requests, outs, winners, p_as)]


def _pair_settings(cfg: RunConfig, t: int) -> dict:
    return {"rho": schedule(cfg.pairs.rho, t), "actor_max": schedule(cfg.pairs.actor_max_chosen_chars, t),
            "judge_max": schedule(cfg.pairs.judge_max_chosen_chars, t), "judge_pairs": cfg.judge_pairs_at(t)}


def build_pairs(cfg: RunConfig, t: int, generate_m: Manifest, judge_m: Manifest,
                meta_m: Manifest | None) -> Manifest:
    """Actor pairs (rho length control) and judge pairs (Elo over meta-verdicts), mixed for DPO."""
    from metareward import pairs as P

    s = _pair_settings(cfg, t)

    def body(folder: str) -> Output:
        responses = store.read_jsonl(generate_m.files["responses"], Response)
        judgments = store.read_jsonl(judge_m.files["judgments"], Judgment)
        actor, a_counts = P.actor_pairs(responses, judgments, s["rho"], s["actor_max"])
        judge_pairs, j_counts, j_stats = [], Counter(), {}
        if meta_m is not None:
            verdicts = store.read_jsonl(meta_m.files["verdicts"], MetaVerdict)
            judge_pairs, j_counts, j_stats = P.judge_pairs(
                responses, judgments, verdicts, position_weights=cfg.meta_judge.position_weights,
                l2=cfg.meta_judge.l2, max_chosen_chars=s["judge_max"],
                require_score_gap=cfg.pairs.judge_require_score_gap)
        judge_pairs, dropped = P.cap_judge_share(actor, judge_pairs, cfg.pairs.judge_max_share, cfg.run.seed)
        mixed = actor + judge_pairs
        out = Output(counts={"actor_pairs": len(actor), "judge_pairs": len(judge_pairs), "pairs": len(mixed),
                             "judge_dropped_by_share_cap": dropped,
                             **{f"actor_{k}": v for k, v in a_counts.items() if k != "pairs"},
                             **{f"judge_{k}": v for k, v in j_counts.items() if k != "pairs"}},
                     stats={"settings": s, "meta_judge": j_stats, **_length_stats(actor, "actor"),
                            **_length_stats(judge_pairs, "judge")})
        _write(out, folder, "pairs", mixed)
        return out

    inputs = {"responses": generate_m.digest, "judgments": judge_m.digest}
    if meta_m is not None:
        inputs["verdicts"] = meta_m.digest
    m = execute("pairs", cfg, t, inputs, body)
    check_health(cfg, t, m)
    return m


def _length_stats(pairs: list[PreferencePair], kind: str) -> dict:
    return {f"{kind}_chosen_mean_chars": _mean(len(p.chosen) for p in pairs),
            f"{kind}_rejected_mean_chars": _mean(len(p.rejected) for p in pairs),
            f"{kind}_chosen_mean_score": _mean(p.chosen_score for p in pairs),
            f"{kind}_rejected_mean_score": _mean(p.rejected_score for p in pairs)}


def train(cfg: RunConfig, t: int, model: ModelRef, pairs_m: Manifest) -> Manifest:
    """DPO on actor + judge pairs; policy and reference start from M_{t-1}; saves M_t."""

    def body(folder: str) -> Output:
        from metareward.launch import train_dpo  # in this process, or `accelerate launch` on several GPUs

        pairs = store.read_jsonl(pairs_m.files["pairs"], PreferencePair)
        if not pairs:
            raise StageError(f"train iter {t}: no preference pair survived (see {pairs_m.uri}/manifest.json)")
        from metareward.remote import local_model, model_output

        model_dir = store.join(folder, "model")
        store.remove(model_dir)  # a partial model an interrupted attempt left
        # Reference log-probs depend on M_{t-1} and the pairs, not on beta or the schedule: they live beside the
        # pairs, so a train stage re-keyed by a DPO setting reuses them (train_dpo checks they still match).
        # On an s3:// store M_{t-1} is pulled into the local cache and M_t saved locally, then pushed (manifest last).
        with model_output(model_dir, cfg.storage.model_cache) as save_dir:
            stats = train_dpo(pairs, local_model(model.uri, model.digest, cfg.storage.model_cache), save_dir, cfg.dpo,
                              trust_remote_code=cfg.model.trust_remote_code, dtype=cfg.model.dtype, seed=cfg.run.seed,
                              ref_logps_uri=store.join(pairs_m.uri, "ref_logps.json"))
            digest = store.folder_digest(save_dir)
        history = stats.pop("log_history", [])
        out = Output(files={"model": model_dir}, digests={"model": digest},
                     counts={"pairs": len(pairs), "steps": int(stats.get("steps", 0))}, stats=stats)
        hist_uri = store.join(folder, "log_history.json")
        store.write_json(hist_uri, history)
        out.files["log_history"] = hist_uri
        return out

    return execute("train", cfg, t, {"model": model.digest, "pairs": pairs_m.digest}, body)


def model_of(train_m: Manifest) -> ModelRef:
    """M_t as the next iteration's stages see it."""
    return ModelRef(uri=train_m.files["model"], digest=train_m.digest, iteration=train_m.iteration)


def benchmark(cfg: RunConfig, t: int, model: ModelRef, prompts_m: Manifest) -> Manifest:
    """M_t on the held-out prompts: answer length, and the score M_t's own judge gives (not a public benchmark)."""

    from metareward.evals import stage as evals

    def body(folder: str) -> Output:
        rows = store.read_jsonl(prompts_m.files["eval"], Prompt)
        engine = _engine(cfg, model)
        pool = evals.EnginePool(lambda ref: _engine(cfg, ref))  # public benchmarks may judge with another model
        pool.put(model, engine)
        try:
            sampling = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=cfg.eval.max_new_tokens)
            outs = engine.generate([p.prompt for p in rows], 1, sampling, cfg.run.seed)
            answers = [Response(id=f"{p.id}-eval", prompt_id=p.id, prompt=p.prompt, text=cs[0].text,
                                n_tokens=cs[0].n_tokens, finish_reason=cs[0].finish_reason)
                       for p, cs in zip(rows, outs)]
            judged = _judge_responses(engine, cfg, answers, 1) if answers else []
            extra = evals.run(cfg, model, folder, pool, lambda: initial_model(cfg),
                              lambda eng, rs: _judge_responses(eng, cfg, rs, 1)) if evals.enabled(cfg) else None
        finally:
            pool.close()
        out = Output(counts={"eval_prompts": len(rows), **_score_counts(judged)},
                     stats={"model_iteration": model.iteration, "mean_chars": _mean(len(a.text) for a in answers),
                            **_score_stats(judged), "judge": f"self (M_{model.iteration})"})
        _write(out, folder, "answers", answers)
        _write(out, folder, "judgments", judged)
        if extra is not None:  # MT-Bench / AlpacaEval / Arena-Hard / judge quality, each naming its judge
            out.merge(extra)
        return out

    return execute("benchmark", cfg, t, {"model": model.digest, "eval": prompts_m.digests["eval"]}, body)


def train_manifest(cfg: RunConfig, t: int) -> Manifest:
    m = store.read_manifest(store.stage_uri(cfg.storage.root, cfg.run.name, t, "train"))
    if m is None:
        raise StageError(f"train iter {t}: no manifest in the run store")
    return m
