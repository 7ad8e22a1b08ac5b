"""The scoring part of the benchmark stage: IFEval and LLMBar (no judge to pay: `pipeline.scored`), MT-Bench,
AlpacaEval, Arena-Hard, the own judge's agreement with human labels, and the drift guard (`pipeline.drift_guard`),
each as configured in ``eval.*`` and ``health.drift``. Called by `metareward.pipeline.stages.benchmark` with the
answers stage's rows and how to open engines; results land in the stage's manifest (stats, counts, files).

Order matters for memory: the answers are written first (the answers stage), then M_t's own work here, then each
other judge. At most one engine is open at a time (`EnginePool`), so a GPU never holds the evaluated model and a
judge together.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from metareward.runstore import store
from metareward.runstore.layout import RunLayout
from metareward.evals import agreement, alpaca, arena_hard, harness, mtbench
from metareward.evals.io import write_jsonl
from metareward.evals.judges import CachedJudge, JudgeCache, LocalJudge, OpenAIJudge
from metareward.records import EvalAnswer, Judgment, Manifest, ModelRef, Response
from metareward.pipeline import drift_guard, scored
from metareward.pipeline.contract import Output
from metareward.pipeline.modelrefs import judge_model


class EnginePool:
    """One engine open at a time: asking for another model closes the current one first."""

    def __init__(self, opener: Callable[[ModelRef], object]):
        self.opener, self.uri, self.engine = opener, None, None

    def get(self, ref: ModelRef):
        if self.uri != ref.uri:
            self.close()
            self.engine, self.uri = self.opener(ref), ref.uri
        return self.engine

    def put(self, ref: ModelRef, engine) -> None:
        """Adopt an engine the caller already opened for ``ref``."""
        self.close()
        self.engine, self.uri = engine, ref.uri

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine = self.uri = None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def _judge(jcfg, model: ModelRef, seed_model: Callable[[], ModelRef], pool: EnginePool, cfg, cache: JudgeCache):
    if jcfg.kind == "openai":
        judge = OpenAIJudge(jcfg.model, jcfg.base_url, jcfg.api_key_env, jcfg.timeout_s, jcfg.max_retries)
        return CachedJudge(judge, cache)
    ref, name = judge_model(jcfg.model, model, seed_model)
    # the digest names the weights, so a cached call is reused only for the very same judge model
    label = f"{cfg.engine.backend}:{name}#{ref.digest[:12]}"
    return CachedJudge(LocalJudge(pool.get(ref), label, cfg.run.seed), cache)


def run(cfg, model: ModelRef, folder: str, pool: EnginePool, seed_model: Callable[[], ModelRef],
        own_judge: Callable[[object, list[Response]], list], got: dict[str, EvalAnswer], answers: list[Response],
        judged: list[Judgment], previous_m: Manifest | None, tstamp: float) -> Output:
    """Score M_t's answers (``got``, the answers stage's rows by id) on every enabled benchmark: M_t's own work first
    (MT-Bench's second turn, its own judge on M_{t-1}'s answers and on labelled pairs), then the other judges.
    ``tstamp``: the time the harnesses' rows carry (the answers' own, so a recomputed stage writes the same bytes)."""
    from metareward.pipeline.answers import load_sources

    e, seed, res = cfg.eval, cfg.run.seed, Output()
    model_id = f"{cfg.run.name}-M{model.iteration}"
    src = load_sources(cfg)
    if src.ifeval is not None:
        scored.ifeval_results(src.ifeval, got, folder, res, seed)
    if src.llmbar:
        scored.llmbar_results(src.llmbar, got, folder, res, e.llmbar.scoring, f"self (M_{model.iteration})", seed)
    engine = pool.get(model)
    mt = None
    if src.mt_bench:
        qs, official = src.mt_bench
        first = {q.question_id: got[f"mt_bench/{q.question_id}"].text for q in qs}
        mt = (qs, official, *harness.second_turns(engine, qs, first, e.mt_bench.max_new_tokens, seed))
    previous = _previous(cfg, previous_m)
    own_prev = own_judge(engine, previous) if previous else None
    if e.judge_quality.labels is not None:
        _judge_quality(cfg, model, folder, engine, own_judge, res)

    cache = JudgeCache(RunLayout.of(cfg).eval_cache)
    if mt is not None:
        judge = _judge(e.mt_bench.judge, model, seed_model, pool, cfg, cache)
        _mt_bench(e.mt_bench, judge, folder, model_id, *mt, res, tstamp)
    if src.alpaca_eval:
        refs, official = src.alpaca_eval
        outputs = [got[f"alpaca_eval/{i}"].text for i in range(len(refs))]
        judge = _judge(e.alpaca_eval.judge, model, seed_model, pool, cfg, cache)
        _alpaca(e.alpaca_eval, judge, folder, model_id, refs, official, outputs, seed, res)
    if src.arena_hard:
        outs = {q["question_id"]: got[f"arena_hard/{q['question_id']}"].text for q in src.arena_hard}
        judge = _judge(e.arena_hard.judge, model, seed_model, pool, cfg, cache)
        _arena(e.arena_hard, judge, folder, model_id, src.arena_hard, outs, res, tstamp)
    if own_prev is not None:
        ref_judge = drift_guard.reference(cfg, seed_model, pool, cache)
        drift_guard.measure(cfg, model, folder, previous, answers, own_prev, judged, ref_judge, res)
    res.stats["judge_cache"] = {"hits": cache.hits, "misses": cache.misses}
    return res


def _previous(cfg, previous_m: Manifest | None) -> list[Response]:
    """M_{t-1}'s held-out answers (the benchmark of iteration t-1), renamed so they never share an id with M_t's."""
    if previous_m is None or not cfg.health.drift.enabled:
        return []
    rows = store.read_jsonl(previous_m.files["answers"], Response)
    return [r.model_copy(update={"id": f"{r.prompt_id}-prev"}) for r in rows]


def _mt_bench(c, judge, folder, model_id, qs, official, answers, how, res: Output, tstamp: float) -> None:
    rows = harness.judge_mt_bench(judge, qs, answers, model_id, c.judge.scoring if judge.kind == "local" else "parse",
                                  c.judge.max_tokens, tstamp)
    base = store.join(folder, "mt_bench")
    res.add("mt_bench_questions", store.join(base, "question.jsonl"), mtbench.write_questions(
        store.join(base, "question.jsonl"), qs))
    uri = store.join(base, "model_answer", f"{model_id}.jsonl")
    res.add("mt_bench_answers", uri, mtbench.write_answers(uri, model_id, answers, tstamp))
    uri = store.join(base, "model_judgment", f"{_safe(judge.identity)}_single.jsonl")
    res.add("mt_bench_judgments", uri, write_jsonl(uri, rows))
    s = mtbench.score(rows, {q.question_id: q.category for q in qs})
    res.counts.update(mt_bench_judgments=len(rows), mt_bench_failed=s["n_failed"])
    res.stats["mt_bench"] = {**{k: v for k, v in s.items() if k != "model"}, "multi_turn": how,
                             "judge_scoring": c.judge.scoring if judge.kind == "local" else "parse",
                             "mean_chars": _mean_len([a for t in answers.values() for a in t]),
                             **harness.judge_record("mt_bench", judge, official)}


def _alpaca(c, judge, folder, model_id, refs, official, outputs, seed, res: Output) -> None:
    rows = harness.annotate_alpaca(judge, refs, outputs, model_id, seed)
    base = store.join(folder, "alpaca_eval")
    uri = store.join(base, "model_outputs.json")
    res.add("alpaca_model_outputs", uri, alpaca.write_outputs(uri, [r["instruction"] for r in refs], outputs,
                                                                model_id, refs[0].get("dataset") if refs else None))
    uri = store.join(base, "annotations.json")
    res.add("alpaca_annotations", uri, alpaca.write_annotations(uri, rows))
    s = alpaca.evaluate(rows, c.difficulty_path, c.gamed_path)
    res.counts.update(alpaca_annotations=len(rows), alpaca_failed=len(rows) - s["n_total"])
    res.stats["alpaca_eval"] = {**s, **harness.judge_record("alpaca_eval", judge, official)}


def _arena(c, judge, folder, model_id, qs, answers, res: Output, tstamp: float) -> None:
    baseline = arena_hard.read_answers(c.baseline_answers)
    rows = harness.judge_arena_hard(judge, qs, answers, baseline, model_id, c.judge.max_tokens)
    base = store.join(folder, "arena_hard")
    uri = store.join(base, "model_answer", f"{model_id}.jsonl")
    res.add("arena_hard_answers", uri, write_jsonl(uri, [arena_hard.answer_row(q, model_id, a, len(a.split()), tstamp)
                                                         for q, a in answers.items()]))
    uri = store.join(base, "model_judgment", _safe(judge.identity), f"{model_id}.jsonl")
    res.add("arena_hard_judgments", uri, write_jsonl(uri, rows))
    s = arena_hard.score(rows, rounds=c.bootstrap_rounds).get(model_id, {})
    res.counts.update(arena_hard_games=2 * len(rows),
                      arena_hard_failed=sum(g["score"] is None for r in rows for g in r["games"]))
    res.stats["arena_hard"] = {**s, **harness.judge_record("arena_hard", judge, True)}


def _judge_quality(cfg, model: ModelRef, folder, engine, own_judge, res: Output) -> None:
    """M_t's own judge (the paper's rubric, as in the judge stage) scores both responses of every labelled pair;
    the higher score is its verdict."""
    pairs = agreement.read_pairs(cfg.eval.judge_quality.labels)
    resp = [Response(id=f"{p['id']}-{side}", prompt_id=p["id"], prompt=p["prompt"], text=p[f"response_{side}"])
            for p in pairs for side in ("a", "b")]
    scores = {j.response_id: j.score for j in own_judge(engine, resp)}
    rows = []
    for p in pairs:
        sa, sb = scores.get(f"{p['id']}-a"), scores.get(f"{p['id']}-b")
        v = agreement.verdict_from_scores(sa, sb, cfg.eval.judge_quality.tie_margin)
        if v is not None:
            rows.append({"id": p["id"], "verdict": v, "score_a": sa, "score_b": sb})
    uri = store.join(folder, "judge_quality", "verdicts.jsonl")
    res.add("judge_quality_verdicts", uri, write_jsonl(uri, rows))
    labels = {p["id"]: p["label"] for p in pairs}
    verdicts = {r["id"]: {**r, "verdict_swapped": None} for r in rows}
    res.stats["judge_quality"] = {**agreement.evaluate(labels, verdicts), "judge": f"self (M_{model.iteration})",
                                  "n_unscored": len(pairs) - len(rows)}


def _mean_len(texts: list[str]) -> float | None:
    return round(sum(map(len, texts)) / len(texts), 1) if texts else None
