"""The stages that run once per run, before iteration 1, as iteration 0 (method.md 2 and 8):

- ``prompt_pool``: the seed model (or ``prompt_pool.model_path``) writes new prompts from k-shot draws of the
  cleaned seed prompts; the parsed prompts are cleaned against the seeds, the held-out prompts and each other,
  and become the pool each iteration's ``prompts`` stage samples from.
- ``eft``: human-ranked Open Assistant replies -> judge-prompt/judgment examples -> SFT (TRL) -> M_0, with the
  judge's pairwise agreement with held-out human rankings measured before and after.

Both go through `stages.execute` like every other stage (keyed on their inputs, config sections and code;
manifest written last), so a rerun skips them.
"""

from __future__ import annotations

import hashlib
from collections import Counter

from metareward.inputs import eft as eft_data
from metareward.inputs import prompt_pool as pool_rules
from metareward.inputs import prompt_sources
from metareward.runstore import store
from metareward.config import RunConfig
from metareward.records import Judgment, Manifest, ModelRef, Prompt
from metareward.pipeline.contract import Output, StageError, execute, write_rows
from metareward.pipeline import modelrefs
from metareward.pipeline.roles import judge_responses, mean, to_sampling


def pool_writer(cfg: RunConfig, seed_model: ModelRef) -> ModelRef:
    """The model that writes prompts: ``prompt_pool.model_path``, or the seed model."""
    if cfg.prompt_pool.model_path is None:
        return seed_model
    from metareward.engines.models import resolve_model

    uri = resolve_model(cfg.prompt_pool.model_path, cfg.storage.model_cache)
    ident = f"path:{cfg.prompt_pool.model_path}"
    return ModelRef(uri=uri, digest=hashlib.sha256(ident.encode()).hexdigest()[:16], iteration=0)


def prompt_pool(cfg: RunConfig, t: int, model: ModelRef) -> Manifest:
    """Generate, parse and clean new prompts from k-shot seed examples; write the training pool."""
    rows, where = prompt_sources.read_source(cfg.prompts)
    writer = pool_writer(cfg, model)
    pc = cfg.prompt_pool

    def compute(folder: str) -> Output:
        seeds, held_out, source_counts = prompt_sources.prepare(rows, cfg.prompts)
        shots = pool_rules.draw_examples(seeds, pc.requests, pc.k_shot, cfg.run.seed)
        engine = modelrefs.open_model_engine(cfg, writer)
        try:
            outs = engine.generate([pool_rules.render([p.prompt for p in s]) for s in shots], pc.samples_per_request,
                                   to_sampling(pc.sampling), cfg.run.seed)
        finally:
            engine.close()
        parsed = [task for cs in outs for c in cs for task in pool_rules.parse_tasks(c.text, pc.parse)]
        # an echoed example or instruction is not a new prompt, and neither is a held-out (eval) prompt
        reference = seeds + held_out + [Prompt(id="instruction", prompt=pool_rules.INSTRUCTION)]
        kept, counts = prompt_sources.clean(pool_rules.new_prompts(parsed), cfg.prompts, against=reference)
        over_size = max(0, len(kept) - pc.size) if pc.size else 0
        kept = kept[: len(kept) - over_size]
        pool = (seeds if pc.include_seeds else []) + kept
        if not pool:
            raise StageError(f"prompt_pool: none of {len(parsed)} parsed prompts survived cleaning "
                             f"(see {folder}/completions.jsonl); try prompt_pool.parse=lines or more requests")
        out = Output(counts={"seeds": len(seeds), "requests": len(shots),
                             "completions": sum(len(cs) for cs in outs),
                             "truncated": sum(c.finish_reason == "length" for cs in outs for c in cs),
                             "parsed": len(parsed), **{f"generated_{k}": v for k, v in counts.items()},
                             "generated_over_size": over_size, "generated_kept": len(kept), "pool": len(pool),
                             **{f"source_{k}": v for k, v in source_counts.items()}},
                     stats={"source": where, "writer": writer.uri, "mean_chars": mean(len(p.prompt) for p in kept)})
        write_rows(out, folder, "pool", pool)
        write_rows(out, folder, "completions", [{"request": i, "examples": [p.id for p in s], "text": c.text}
                                            for i, (s, cs) in enumerate(zip(shots, outs)) for c in cs])
        return out

    inputs = {"source": prompt_sources.source_digest(rows, cfg.prompts), "model": writer.digest}
    return execute("prompt_pool", cfg, t, inputs, compute)


# -------------------------------------------------------------------------------------------------- EFT


def _integer_score(j: Judgment) -> int | None:
    """The score written in the judgment text, when it is a whole point (the SFT target is that text)."""
    from metareward.method.parsing import parse_score

    s = parse_score(j.text)
    return int(s) if s is not None and s == int(s) else None


def _agreement(engine, cfg: RunConfig, held: list[eft_data.RankedGroup]) -> tuple[dict | None, list[Judgment]]:
    """The judge's pairwise agreement with the held-out human rankings (mean of eval_n scores per reply)."""
    if not held:
        return None, []
    judged = judge_responses(engine, cfg, eft_data.responses(held), cfg.eft.eval_n)
    by_reply: dict[str, list[float]] = {}
    for j in judged:
        if j.score is not None:
            by_reply.setdefault(j.response_id, []).append(j.score)
    scores = {rid: sum(v) / len(v) for rid, v in by_reply.items()}
    return eft_data.pairwise_agreement(held, scores), judged


def _examples(cfg: RunConfig, engine, train: list[eft_data.RankedGroup]) -> tuple[list[eft_data.EFTExample], dict[str, int]]:
    if cfg.eft.judgments == "rubric":
        return eft_data.rubric_examples(train, cfg.eft.top_score), {}
    judged = judge_responses(engine, cfg, eft_data.responses(train), cfg.eft.n)
    candidates: dict[str, list[tuple[int | None, str]]] = {}
    for j in judged:
        candidates.setdefault(j.response_id, []).append((_integer_score(j), j.text))
    rows, inconsistent = eft_data.generated_examples(train, candidates)
    return rows, {"judgments_sampled": len(judged), "groups_inconsistent": inconsistent}


def eft(cfg: RunConfig, t: int, model: ModelRef) -> Manifest:
    """Evaluation fine-tuning of the seed model on judge examples that agree with human rankings -> M_0."""
    groups, skipped, where = eft_data.read_ranked_file(cfg.eft.path, cfg.eft.lang)

    def compute(folder: str) -> Output:
        from metareward.training.sft import train_sft

        train, held = eft_data.split_groups(groups, cfg.eft.eval_fraction)
        engine = modelrefs.open_model_engine(cfg, model)
        try:
            before, judged_before = _agreement(engine, cfg, held)
            rows, build_counts = _examples(cfg, engine, train)
        finally:
            engine.close()
        built = len(rows)
        rows, down = eft_data.downsample_most_common(rows, cfg.run.seed) if cfg.eft.downsample else (rows, 0)
        if not rows:
            raise StageError(f"eft: no example ranks the replies as the humans did ({build_counts}); "
                             "try eft.judgments=rubric or a larger eft.n")
        from metareward.runstore.remote import local_model, model_output

        model_dir = store.join(folder, "model")
        with model_output(model_dir, cfg.storage.model_cache) as save_dir:  # pushed to an s3:// store on success
            stats = train_sft(eft_data.sft_rows(rows), local_model(model.uri, model.digest, cfg.storage.model_cache),
                              save_dir, cfg.eft.sft, dtype=cfg.model.dtype,
                              trust_remote_code=cfg.model.trust_remote_code, seed=cfg.run.seed)
            m0 = ModelRef(uri=model_dir, digest=store.folder_digest(save_dir), iteration=0)
        engine = modelrefs.open_model_engine(cfg, m0)
        try:
            after, judged_after = _agreement(engine, cfg, held)
        finally:
            engine.close()
        history = stats.pop("log_history", [])
        hist = Counter(r.score for r in rows)
        out = Output(files={"model": model_dir}, digests={"model": m0.digest},
                     counts={"groups": len(groups), "train_groups": len(train), "heldout_groups": len(held),
                             **{f"skip_{k}": v for k, v in skipped.items()}, **build_counts,
                             "examples_built": built, "examples_downsampled": down, "examples": len(rows),
                             "steps": int(stats.get("steps", 0))},
                     stats={"source": where, "mode": cfg.eft.judgments, "agreement_before": before,
                            "agreement_after": after, "score_histogram": {str(k): hist.get(k, 0) for k in range(6)},
                            "sft": stats})
        write_rows(out, folder, "examples", rows)
        write_rows(out, folder, "heldout_judgments_before", judged_before)
        write_rows(out, folder, "heldout_judgments_after", judged_after)
        hist_uri = store.join(folder, "log_history.json")
        store.write_json(hist_uri, history)
        out.files["log_history"] = hist_uri
        return out

    return execute("eft", cfg, t, {"model": model.digest, "ranked": eft_data.groups_digest(groups)}, compute)
