"""One function per stage of an iteration: (config, t, inputs) -> Manifest. Runnable without Prefect.

Every stage goes through `metareward.pipeline.contract.execute` (skip when done, manifest written last); the
roles' requests are built in `metareward.pipeline.roles`, the models passed on in `metareward.pipeline.modelrefs`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from metareward.config import RunConfig
from metareward.inputs import prompt_sets
from metareward.pipeline.contract import (Output, StageError, execute, sharded, stage_key, started,
                                          write_rows)
from metareward.pipeline import modelrefs  # modelrefs.open_model_engine is looked up per call: tests swap it
from metareward.pipeline.modelrefs import LazyEngine, base_model, initial_model, model_of
from metareward.pipeline.roles import (fits_context, judge_responses, judgeable, mean, meta_requests, run_meta,
                                       score_counts, score_stats, to_sampling)
from metareward.records import EvalAnswer, Judgment, Manifest, MetaVerdict, ModelRef, PreferencePair, Prompt, Response
from metareward.runstore import store
from metareward.runstore.layout import RunLayout

log = logging.getLogger("metareward")
# Also the public names of the stage contract and the model references (tasks and tests use them from here).
__all__ = ["Output", "StageError", "answers", "base_model", "benchmark", "check_health", "execute", "generate",
           "initial_model", "judge", "meta_judge", "model_of", "prompts", "stage_key", "train"]


def prompts(cfg: RunConfig, t: int, pool_m: Manifest | None = None) -> Manifest:
    """Read and clean the prompt source (duplicates, length, benchmark overlap), hold out the eval prompts, and
    pick iteration t's training prompts from the source's rest or, when given, the generated pool."""
    from metareward.inputs import prompt_sources

    rows, where = prompt_sources.read_source(cfg.prompts)
    inputs = {"source": prompt_sources.source_digest(rows, cfg.prompts)}
    if pool_m is not None:
        inputs["pool"] = pool_m.digest

    def compute(folder: str) -> Output:
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
        write_rows(out, folder, "prompts", picked)
        write_rows(out, folder, "eval", held_out)
        return out

    return execute("prompts", cfg, t, inputs, compute)


def generate(cfg: RunConfig, t: int, model: ModelRef, prompts_m: Manifest) -> Manifest:
    """Actor: K sampled responses per prompt from M_{t-1}, committed in shards of engine.shard_size prompts."""
    inputs = {"model": model.digest, "prompts": prompts_m.digest}

    def compute(folder: str) -> Output:
        rows = store.read_jsonl(prompts_m.files["prompts"], Prompt)

        def compute_shard(engine, chunk: list[Prompt], seeds: list[int]) -> list[Response]:
            kept = fits_context(engine, list(zip(chunk, seeds)), [p.prompt for p in chunk],
                                cfg.actor.sampling.max_new_tokens)
            chunk = [p for p, _ in kept]
            outs = engine.generate([p.prompt for p in chunk], cfg.actor.k, to_sampling(cfg.actor.sampling),
                                   [s for _, s in kept])
            return [Response(id=f"{p.id}-r{k}", prompt_id=p.id, prompt=p.prompt, text=c.text, n_tokens=c.n_tokens,
                             finish_reason=c.finish_reason) for p, cs in zip(chunk, outs) for k, c in enumerate(cs)]

        responses, shard_counts, secs = _sharded_on_engine(cfg, t, "generate", inputs, folder, model, rows, compute_shard, Response)
        out = Output(counts={"prompts": len(rows), "responses": len(responses),
                             # skipped in `compute_shard`, so counted from what is missing (finished shards included)
                             "too_long_for_context": len(rows) - len({r.prompt_id for r in responses}),
                             "empty": sum(not r.text.strip() for r in responses),
                             "truncated": sum(r.finish_reason == "length" for r in responses)},
                     stats={**_gen_stats(responses, secs), **shard_counts})
        write_rows(out, folder, "responses", responses)
        return out

    return execute("generate", cfg, t, inputs, compute)


def _sharded_on_engine(cfg: RunConfig, t: int, stage: str, inputs: dict[str, str], folder: str, model: ModelRef, items,
               compute_shard, record) -> tuple[list, dict, float]:
    """``compute_shard(engine, chunk, seeds)`` over ``items`` in the stage's shards (`contract.sharded`), all handed to
    the engine at once (`run_together`), on an engine of ``model`` opened only if a shard is left to compute (a
    resumed stage whose shards are all done, or a merge, loads no model) and closed after: the rows, the shard
    counts and the seconds it took."""
    from metareward.engines.base import run_together

    engine = LazyEngine(cfg, model)
    try:
        start = started(time.perf_counter())
        rows, counts = sharded(cfg, t, stage, inputs, folder, items,
                               lambda chunk, seeds: compute_shard(engine.get(), chunk, seeds), record,
                               together=lambda jobs: run_together(engine.get(), jobs))
        return rows, counts, time.perf_counter() - start
    finally:
        engine.close()


def _gen_stats(responses: list[Response], secs: float) -> dict:
    tokens = sum(r.n_tokens for r in responses)
    return {"mean_chars": mean([len(r.text) for r in responses]), "generated_tokens": tokens,
            "seconds": round(secs, 2), "tokens_per_s": round(tokens / secs, 1) if secs > 0 else None}


def judge(cfg: RunConfig, t: int, model: ModelRef, generate_m: Manifest) -> Manifest:
    """Judge: N judgments per response with the 5-point additive rubric; scores parsed (or expected)."""

    inputs = {"model": model.digest, "responses": generate_m.digest}

    def compute(folder: str) -> Output:
        responses = store.read_jsonl(generate_m.files["responses"], Response)

        def compute_shard(engine, chunk: list[Response], seeds: list[int]) -> list[Judgment]:
            kept, kept_seeds = judgeable(engine, cfg, chunk, seeds)
            return judge_responses(engine, cfg, kept, cfg.judge.n, kept_seeds)

        rows, shard_counts, secs = _sharded_on_engine(cfg, t, "judge", inputs, folder, model, responses, compute_shard, Judgment)
        out = Output(counts={**score_counts(rows),
                             "too_long_for_context": len(responses) - len({j.response_id for j in rows})},
                     stats={**score_stats(rows), "seconds": round(secs, 2), **shard_counts})
        write_rows(out, folder, "judgments", rows)
        return out

    m = execute("judge", cfg, t, inputs, compute)
    check_health(cfg, t, m)
    return m


def check_health(cfg: RunConfig, t: int, m: Manifest) -> None:
    """The health gates of a judge or pairs stage's output (metareward/method/health.py): the report goes to
    the iteration's ``health.json`` either way; a failed gate raises StageError naming it. The stage's manifest is
    already written, so a rerun with other thresholds reuses the stage."""
    from metareward.method import health
    from metareward.runstore.redact import redact_obj

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
    uri = RunLayout.of(cfg).health(t)
    report = store.read_json(uri) if store.exists(uri) else {}
    report[m.stage] = {"passed": not failed, "failed": failed, "metrics": metrics, "key": m.key,
                       "thresholds": cfg.health.model_dump(mode="json")}
    store.write_json(uri, redact_obj(report))
    if failed:
        raise StageError(f"{m.stage} iter {t}: health gate failed: {'; '.join(failed)} (report: {uri})")


def meta_judge(cfg: RunConfig, t: int, model: ModelRef, generate_m: Manifest, judge_m: Manifest) -> Manifest:
    """Meta-judge: every pair of judgments of each prompt's most-disputed response, in both orders."""
    from metareward.method import pairs as pairing

    inputs = {"model": model.digest, "responses": generate_m.digest, "judgments": judge_m.digest}

    def compute(folder: str) -> Output:
        responses = store.read_jsonl(generate_m.files["responses"], Response)
        judgments = store.read_jsonl(judge_m.files["judgments"], Judgment)
        targets, skipped = pairing.meta_targets(responses, judgments, cfg.run.seed)
        requests = meta_requests(cfg, targets, responses, judgments)
        verdicts, shard_counts, secs = _sharded_on_engine(cfg, t, "meta_judge", inputs, folder, model, requests,
                                                  lambda engine, chunk, seeds: run_meta(engine, cfg, chunk, seeds),
                                                  MetaVerdict)
        decided = sum(v.winner is not None for v in verdicts)
        out = Output(counts={"targets": len(targets), "calls": len(verdicts), "decided": decided,
                             "undecided": len(verdicts) - decided, **{f"skip_{k}": v for k, v in skipped.items()}},
                     stats={"seconds": round(secs, 2), **shard_counts,
                            "p_first_wins": mean(v.p_a for v in verdicts if v.p_a is not None)})
        write_rows(out, folder, "verdicts", verdicts)
        return out

    return execute("meta_judge", cfg, t, inputs, compute)


def pairs(cfg: RunConfig, t: int, generate_m: Manifest, judge_m: Manifest,
                meta_m: Manifest | None) -> Manifest:
    """Actor pairs (rho length control) and judge pairs (Elo over meta-verdicts), mixed for DPO."""
    from metareward.method import pairs as pairing

    at = cfg.at(t)

    def compute(folder: str) -> Output:
        responses = store.read_jsonl(generate_m.files["responses"], Response)
        judgments = store.read_jsonl(judge_m.files["judgments"], Judgment)
        actor, a_counts = pairing.actor_pairs(responses, judgments, at.rho, at.actor_max_chosen_chars)
        judge_pairs, j_counts, j_stats = [], Counter(), {}
        if meta_m is not None:
            verdicts = store.read_jsonl(meta_m.files["verdicts"], MetaVerdict)
            judge_pairs, j_counts, j_stats = pairing.judge_pairs(
                responses, judgments, verdicts, position_weights=cfg.meta_judge.position_weights,
                l2=cfg.meta_judge.l2, max_chosen_chars=at.judge_max_chosen_chars,
                require_score_gap=cfg.pairs.judge_require_score_gap)
        judge_pairs, dropped = pairing.cap_judge_share(actor, judge_pairs, cfg.pairs.judge_max_share, cfg.run.seed)
        mixed = actor + judge_pairs
        out = Output(counts={"actor_pairs": len(actor), "judge_pairs": len(judge_pairs), "pairs": len(mixed),
                             "judge_dropped_by_share_cap": dropped,
                             **{f"actor_{k}": v for k, v in a_counts.items() if k != "pairs"},
                             **{f"judge_{k}": v for k, v in j_counts.items() if k != "pairs"}},
                     stats={"settings": at.schedules(), "meta_judge": j_stats, **_length_stats(actor, "actor"),
                            **_length_stats(judge_pairs, "judge")})
        write_rows(out, folder, "pairs", mixed)
        return out

    inputs = {"responses": generate_m.digest, "judgments": judge_m.digest}
    if meta_m is not None:
        inputs["verdicts"] = meta_m.digest
    m = execute("pairs", cfg, t, inputs, compute)
    check_health(cfg, t, m)
    return m


def _length_stats(pairs: list[PreferencePair], kind: str) -> dict:
    return {f"{kind}_chosen_mean_chars": mean(len(p.chosen) for p in pairs),
            f"{kind}_rejected_mean_chars": mean(len(p.rejected) for p in pairs),
            f"{kind}_chosen_mean_score": mean(p.chosen_score for p in pairs),
            f"{kind}_rejected_mean_score": mean(p.rejected_score for p in pairs)}


def train(cfg: RunConfig, t: int, model: ModelRef, pairs_m: Manifest) -> Manifest:
    """DPO on actor + judge pairs; policy and reference start from M_{t-1}; saves M_t."""

    def compute(folder: str) -> Output:
        from metareward.training.launch import train_dpo  # in this process, or `accelerate launch` on several GPUs

        pairs = store.read_jsonl(pairs_m.files["pairs"], PreferencePair)
        if not pairs:
            raise StageError(f"train iter {t}: no preference pair survived (see {pairs_m.uri}/manifest.json)")
        from metareward.runstore.remote import local_model, model_output

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

    return execute("train", cfg, t, {"model": model.digest, "pairs": pairs_m.digest}, compute)


def answers(cfg: RunConfig, t: int, model: ModelRef, prompts_m: Manifest) -> Manifest:
    """M_t's greedy replies to everything the benchmark stage scores (held-out prompts, IFEval, MT-Bench turn 1,
    AlpacaEval, Arena-Hard, LLMBar's requests), in shards that replicas answer at once (`pipeline.answers`)."""
    from metareward.pipeline import answers as bench

    rows = store.read_jsonl(prompts_m.files["eval"], Prompt)
    work = bench.calls_for(cfg, rows, bench.load_sources(cfg))
    inputs = {"model": model.digest, "eval": prompts_m.digests["eval"], "calls": bench.digest(work)}

    def compute(folder: str) -> Output:
        got, shard_counts, secs = _sharded_on_engine(cfg, t, "answers", inputs, folder, model, work, bench.answer_shard,
                                                     EvalAnswer)
        tokens = sum(a.n_tokens for a in got)
        by_bench = Counter(a.id.split("/", 1)[0] for a in got)
        out = Output(counts={"answers": len(got), **{f"answers_{k}": v for k, v in sorted(by_bench.items())},
                             "truncated": sum(a.finish_reason == "length" for a in got),
                             "too_long_for_context": sum(a.finish_reason == "too_long" for a in got)},
                     stats={"model_iteration": model.iteration, "generated_tokens": tokens, "seconds": round(secs, 2),
                            "tokens_per_s": round(tokens / secs, 1) if secs > 0 else None, **shard_counts})
        write_rows(out, folder, "answers", got)
        return out

    return execute("answers", cfg, t, inputs, compute)


def benchmark(cfg: RunConfig, t: int, model: ModelRef, prompts_m: Manifest, answers_m: Manifest,
              previous_m: Manifest | None = None) -> Manifest:
    """M_t's answers scored: the held-out prompts by M_t's own judge, every enabled benchmark by its scorer and
    evaluator judge (`pipeline.benchmark`), and the drift guard: M_t's own judge and the reference judge on the
    held-out answers of M_{t-1} (``previous_m``, the benchmark of iteration t-1) and of M_t."""
    from metareward.pipeline import benchmark as evals

    inputs = {"model": model.digest, "eval": prompts_m.digests["eval"], "answers": answers_m.digest}
    if previous_m is not None:
        inputs["previous"] = previous_m.digest

    def compute(folder: str) -> Output:
        rows = store.read_jsonl(prompts_m.files["eval"], Prompt)
        got = {a.id: a for a in store.read_jsonl(answers_m.files["answers"], EvalAnswer)}
        answers = [Response(id=f"{p.id}-eval", prompt_id=p.id, prompt=p.prompt, text=got[f"heldout/{p.id}"].text,
                            n_tokens=got[f"heldout/{p.id}"].n_tokens, finish_reason=got[f"heldout/{p.id}"].finish_reason)
                   for p in rows]
        pool = evals.EnginePool(lambda ref: modelrefs.open_model_engine(cfg, ref))  # one model open at a time
        try:
            judged = judge_responses(pool.get(model), cfg, answers, 1) if answers else []
            extra = evals.run(cfg, model, folder, pool, lambda: initial_model(cfg),
                              lambda eng, rs: judge_responses(eng, cfg, rs, 1), got, answers, judged, previous_m,
                              _created(answers_m))
        finally:
            pool.close()
        out = Output(counts={"eval_prompts": len(rows), **score_counts(judged)},
                     stats={"model_iteration": model.iteration, "mean_chars": mean(len(a.text) for a in answers),
                            **score_stats(judged), "judge": f"self (M_{model.iteration})"})
        write_rows(out, folder, "answers", answers)
        write_rows(out, folder, "judgments", judged)
        out.merge(extra)  # IFEval, LLMBar, MT-Bench, AlpacaEval, Arena-Hard, judge quality, drift: each naming its judge
        return out

    return execute("benchmark", cfg, t, inputs, compute)


def _created(m: Manifest) -> float:
    """When a manifest was written, as a Unix time."""
    from datetime import datetime

    return datetime.fromisoformat(m.created).timestamp() if m.created else 0.0
