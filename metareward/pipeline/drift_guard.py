"""The drift guard's part of the benchmark stage: M_t's own judge and a fixed reference judge score the held-out
answers of M_{t-1} and of M_t; the figures (`metareward.method.drift`) go into the stage's stats and ``drift.jsonl``.
The gate that reads them runs after the stage (`record`, then `stop` once the iteration is reported), so a rerun
with other thresholds reuses the stage.

The reference judge is local (M_0 by default, or a model folder), asked with the run's own judge prompt and scoring
(``judge.*``), so both judges are read the same way; or an OpenAI-compatible endpoint whose "Score: N" is parsed.
"""

from __future__ import annotations

from collections.abc import Callable

from metareward.evals.io import write_jsonl
from metareward.pipeline.contract import Output, StageError
from metareward.records import Judgment, ModelRef, Response
from metareward.runstore import store


def reference(cfg, seed_model: Callable[[], ModelRef], pool, cache) -> Callable[[list[Response]], tuple[dict, str]]:
    """The reference judge: a function from responses to ({prompt_id: score}, the judge's name)."""
    j = cfg.health.drift.reference_judge
    if j.kind == "openai":
        from metareward.evals.judges import CachedJudge, Chat, OpenAIJudge
        from metareward.method.parsing import parse_score
        from metareward.method.prompts import render_judge

        judge = CachedJudge(OpenAIJudge(j.model, j.base_url, j.api_key_env, j.timeout_s, j.max_retries), cache)

        def ask(responses: list[Response]) -> tuple[dict, str]:
            texts = judge.generate([Chat(None, render_judge(r.prompt, r.text)) for r in responses], j.max_tokens)
            return {r.prompt_id: s for r, t in zip(responses, texts) if (s := parse_score(t)) is not None}, \
                judge.identity
        return ask

    from metareward.pipeline.modelrefs import judge_model
    from metareward.pipeline.roles import judge_responses

    ref, name = judge_model(j.model, None, seed_model)

    def local(responses: list[Response]) -> tuple[dict, str]:
        return scores(judge_responses(pool.get(ref), cfg, responses, 1)), f"local:{name}#{ref.digest[:12]}"
    return local


def scores(judged: list[Judgment]) -> dict[str, float]:
    """{prompt_id: score} of one judgment per response (unscored ones left out)."""
    return {j.prompt_id: j.score for j in judged if j.score is not None}


def measure(cfg, model: ModelRef, folder: str, previous: list[Response], current: list[Response],
            own_prev: list[Judgment], own_cur: list[Judgment], ref_judge, res: Output) -> None:
    """Both judges on both models' answers: the figures into ``res.stats['drift']``, one row per prompt into
    ``drift.jsonl``."""
    from metareward.method import drift

    ref_prev, name = ref_judge(previous)
    ref_cur, _ = ref_judge(current)
    own = {"prev": scores(own_prev), "cur": scores(own_cur)}
    ref = {"prev": ref_prev, "cur": ref_cur}
    texts = {"prev": {r.prompt_id: r.text for r in previous}, "cur": {r.prompt_id: r.text for r in current}}
    rows = [{"prompt_id": p, "prev_chars": len(texts["prev"][p]), "cur_chars": len(texts["cur"].get(p, "")),
             "own_prev": own["prev"].get(p), "own_cur": own["cur"].get(p), "ref_prev": ref_prev.get(p),
             "ref_cur": ref_cur.get(p)} for p in sorted(texts["prev"])]
    uri = store.join(folder, "drift.jsonl")
    res.add("drift", uri, write_jsonl(uri, rows))
    res.stats["drift"] = {**drift.metrics(own, ref, texts, cfg.run.seed), "own_judge": f"M_{model.iteration}",
                          "answers": f"M_{model.iteration - 1} vs M_{model.iteration}", "reference_judge": name}


def record(cfg, t: int, history: list[dict]) -> list[str]:
    """The drift gates over iterations 1..t's figures (``history``, oldest first), recorded in iteration t's
    ``health.json`` (so the summary and report show them); returns the failed gates. Nothing is recomputed."""
    from metareward.method import drift
    from metareward.runstore.layout import RunLayout
    from metareward.runstore.redact import redact_obj

    if not (cfg.health.enabled and cfg.health.drift.enabled) or not history:
        return []
    failed = drift.failed_gates(history, cfg.health.drift)
    uri = RunLayout.of(cfg).health(t)
    report = store.read_json(uri) if store.exists(uri) else {}
    report["drift"] = {"passed": not failed, "failed": failed, "metrics": history[-1],
                       "history": history, "thresholds": cfg.health.drift.model_dump(mode="json")}
    store.write_json(uri, redact_obj(report))
    return failed


def stop(cfg, t: int, failed: list[str]) -> None:
    """A StageError naming the failed drift gates (`record`'s), so the run ends before M_t judges its own pairs."""
    from metareward.runstore.layout import RunLayout

    if failed:
        raise StageError(f"benchmark iter {t}: drift gate failed: {'; '.join(failed)} (report: "
                         f"{RunLayout.of(cfg).health(t)}); the run stops before M_t judges its own pairs")
