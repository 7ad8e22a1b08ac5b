"""Each iteration of a run in MLflow or Weights & Biases (``tracking.backend``), read back from the run store.

One tracking run per Meta-Rewarding run, named ``run.name``: the config as parameters (logged when the tracking run
is made), per iteration (step = t) the summary's numbers, the judge-health figures and gates, the benchmark results
and stage seconds as metrics, the stage manifests' digests as tags, the summary and run report as artifacts; DPO's
own curves (TRL's per-step logs, ``loss``, ``rewards/accuracies``...) in a child run per iteration (MLflow: nested
under the run; W&B: a table). The layout's ``tracked(t)`` file records the tracking run an iteration went to and its
stages' digests, so a cached or resumed run does not log it twice; a recomputed stage logs the iteration again. Credentials and servers come from the environment only.

The judge-free measures of M_t's benchmark go under their own names at step t (`measures.figures`:
``ifeval/prompt_level_strict_acc`` with ``_lo``/``_hi``, ``llmbar/accuracy``, ``drift/gap``...), and M_0's at step 0
when iteration 1 is logged, so each is one curve over the models M_0..M_T (W&B groups them by the prefix).

    >>> flatten({"a": {"b": 1, "c": [2]}, "d": "x", "e": None})
    {'a.b': 1, 'a.c': '[2]', 'd': 'x', 'e': None}
    >>> numbers({"train": {"steps": 4, "note": "x"}, "ok": True, "rate": 0.5})
    {'train.steps': 4.0, 'ok': 1.0, 'rate': 0.5}

mlflow and wandb are imported inside functions only (the ``tracking`` extra).
"""

from __future__ import annotations

import hashlib
import json
import os
import re

from metareward.records import Manifest
from metareward.registry import ITERATION
from metareward.reporting import measures
from metareward.runstore import integrity, store
from metareward.runstore.layout import RunLayout

# MLflow's metric and parameter names: letters, digits and _ - . space / only.
_NAME = re.compile(r"[^A-Za-z0-9_\-. /]")


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dicts as dotted keys; lists as JSON text (a parameter is one value)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list) else v
    return out


def numbers(d: dict) -> dict[str, float]:
    """The numeric leaves of a nested dict as floats (booleans as 0/1), under names MLflow accepts."""
    return {_NAME.sub("_", k): float(v) for k, v in flatten(d).items()
            if isinstance(v, (int, float)) and v == v}  # v == v drops NaN


MEASURES = ("ifeval", "llmbar", "drift")  # the benchmark's sections logged by `measures.figures`, not flattened


def _judged_only(bench: dict) -> dict:
    return {k: v for k, v in bench.items() if k not in MEASURES}


def measure_metrics(bench: dict) -> dict[str, float]:
    """A benchmark's judge-free figures under names MLflow accepts (an LLMBar set's name is the data's)."""
    return {_NAME.sub("_", k): float(v) for k, v in measures.figures(bench).items()}


def iteration_metrics(run: RunLayout, t: int) -> dict[str, float]:
    """Iteration t's figures: its summary (counts, parse rate, scores, pairs, lengths, position weights, training,
    benchmark, stage seconds), M_t's judge-free measures (`measures.figures`) and its judge-health record (metrics
    and whether each gate passed)."""
    summary = store.read_json(run.summary(t, "json"))
    summary.pop("iteration", None)
    bench = summary.get("benchmark") or {}
    for label in ("benchmark", "benchmark_baseline"):
        if isinstance(summary.get(label), dict):
            summary[label] = _judged_only(summary[label])
    out = {**numbers(summary), **measure_metrics(bench)}
    if store.exists(run.health(t)):
        for gate, record in store.read_json(run.health(t)).items():
            figures = {} if gate == "drift" else record.get("metrics") or {}  # drift's are drift/* already
            out.update(numbers({f"health.{gate}": {**figures, "passed": record.get("passed")}}))
    return out


def baseline_metrics(run: RunLayout, t: int) -> dict[str, float]:
    """M_0's judge-free measures, for step 0: from the summary of iteration 1 (which holds M_0's benchmark)."""
    if t != 1:
        return {}
    return measure_metrics(store.read_json(run.summary(t, "json")).get("benchmark_baseline") or {})


def manifests(run: RunLayout, t: int, model_cache: str | None = None) -> dict[str, Manifest]:
    """The manifests iteration t has (an iteration without a meta-judge has none for it); a damaged stage is a
    one-line StoreError naming it, never logged."""
    found = {s: integrity.checked(run.stage(t, s), model_cache) for s in (*ITERATION, "benchmark")}
    return {s: m for s, m in found.items() if m is not None}


def digest_tags(t: int, ms: dict[str, Manifest]) -> dict[str, str]:
    """``iter1.pairs.digest`` -> the pairs manifest's digest, and the model digest M_t was saved with."""
    tags = {f"iter{t}.{s}.digest": m.digest for s, m in ms.items()}
    if "train" in ms and "model" in ms["train"].digests:
        tags[f"iter{t}.model.digest"] = ms["train"].digests["model"]
    return tags


def dpo_curve(ms: dict[str, Manifest]) -> list[tuple[int, dict[str, float]]]:
    """TRL's per-step logs of the iteration's DPO run as (step, metrics); the final summary entry dropped."""
    uri = ms["train"].files.get("log_history") if "train" in ms else None
    if not uri or not store.exists(uri):
        return []
    out = []
    for i, entry in enumerate(store.read_json(uri)):
        metrics = {k: v for k, v in numbers(entry).items() if k not in ("step", "epoch")}
        if metrics and "train_runtime" not in entry:
            out.append((int(entry.get("step", i + 1)), metrics))
    return out


def artifacts(run: RunLayout, t: int) -> list[str]:
    """Local files to attach: the iteration's summary and the run report (HTML, Markdown, plots)."""
    files = [run.summary(t, "md"), run.summary(t, "json")]
    if store.exists(run.report):
        files += sorted(store.join(run.report, n.rsplit("/", 1)[-1]) for n in store.fs_for(run.report).ls(run.report)
                        if n.endswith((".html", ".md", ".png")))
    return [f for f in files if store.exists(f) and "://" not in f]


def target(tracking) -> str:
    """Where logs go, to tell a marker for this destination from one for another (no credentials in it)."""
    if tracking.backend == "mlflow":
        uri = os.environ.get("MLFLOW_TRACKING_URI", "./mlruns")
        return f"mlflow {re.sub(r'//[^/@]*@', '//', uri)} {tracking.experiment}"
    return f"wandb {os.environ.get('WANDB_MODE', 'online')} {tracking.project}"


def already_logged(run: RunLayout, t: int, tracking, tags: dict[str, str]) -> bool:
    """Iteration t went to this destination with these stage digests (a recomputed stage is logged again)."""
    uri = run.tracked(t)
    if not store.exists(uri):
        return False
    marker = store.read_json(uri)
    return marker.get("target") == target(tracking) and marker.get("tags") == tags


def log_iteration(cfg, t: int) -> dict | None:
    """Log iteration t of the run ``cfg`` describes to ``cfg.tracking``; the marker written, or None when tracking
    is off or this iteration already went to the same destination."""
    tracking, run = cfg.tracking, RunLayout.of(cfg)
    if tracking.backend == "none":
        return None
    ms = manifests(run, t, cfg.storage.model_cache)
    tags = digest_tags(t, ms)
    if already_logged(run, t, tracking, tags):
        return None
    config = store.read_json(run.config)  # as stored: secrets masked
    record = {"iteration": t, "target": target(tracking),
              "metrics": iteration_metrics(run, t), "baseline": baseline_metrics(run, t), "tags": tags,
              "dpo_curve": dpo_curve(ms)}
    sink = _mlflow_iteration if tracking.backend == "mlflow" else _wandb_iteration
    record["run_id"] = sink(cfg.run.name, tracking, flatten(config), record, artifacts(run, t))
    marker = {k: record[k] for k in ("iteration", "target", "tags", "run_id")}
    store.write_json(run.tracked(t), marker)
    return marker


def _mlflow_run(client, name: str, experiment: str, params: dict) -> str:
    """The run named ``name`` in ``experiment``, made (with the config as parameters) when there is none."""
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    found = client.search_runs([exp_id], filter_string=f"tags.`mlflow.runName` = '{name}' "
                               "and tags.`metareward.role` = 'run'", max_results=1)
    if found:
        return found[0].info.run_id
    run_id = client.create_run(exp_id, run_name=name, tags={"metareward.role": "run"}).info.run_id
    from mlflow.entities import Param

    items = [Param(k[:250], str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):  # the server takes at most 100 parameters a call
        client.log_batch(run_id, params=items[i:i + 100])
    return run_id


def _mlflow_iteration(name: str, tracking, params: dict, record: dict, files: list[str]) -> str:
    import time

    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run_id = _mlflow_run(client, name, tracking.experiment, params)
    t, now = record["iteration"], int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in record["baseline"].items()]  # M_0's measures at step 0
    metrics += [Metric(k, v, now, t) for k, v in record["metrics"].items()]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000], tags=[RunTag(k, v) for k, v in record["tags"].items()]
                         if i == 0 else [])
    for f in files:
        client.log_artifact(run_id, f, artifact_path=f"iter{t}")
    if record["dpo_curve"]:
        exp_id = client.get_run(run_id).info.experiment_id
        child = client.create_run(exp_id, run_name=f"{name}-dpo-iter{t}",
                                  tags={"mlflow.parentRunId": run_id, "metareward.role": "dpo", "iteration": str(t)})
        client.log_batch(child.info.run_id, metrics=[Metric(k, v, now, step) for step, m in record["dpo_curve"]
                                                     for k, v in m.items()])
        client.set_terminated(child.info.run_id)
    client.set_terminated(run_id)  # FINISHED between iterations; the next one logs to it again
    return run_id


def _wandb_iteration(name: str, tracking, params: dict, record: dict, files: list[str]) -> str:
    import wandb

    run_id = hashlib.sha256(f"{tracking.project}/{name}".encode()).hexdigest()[:16]  # the same run on every resume
    run = wandb.init(project=tracking.project, name=name, id=run_id, resume="allow", config=params,
                     settings=wandb.Settings(silent=True))
    try:
        t = record["iteration"]
        data = {**record["metrics"]}
        if record["dpo_curve"]:
            keys = sorted({k for _, m in record["dpo_curve"] for k in m})
            data["dpo_curve"] = wandb.Table(columns=["step", *keys],
                                            data=[[s, *(m.get(k) for k in keys)] for s, m in record["dpo_curve"]])
        if record["baseline"]:  # M_0's measures at step 0, before step t: W&B ignores a step it has passed
            run.log(record["baseline"], step=0)
        run.log(data, step=t)
        run.tags = tuple(sorted(set(run.tags or ()) | {"metareward"}))
        run.summary.update(record["tags"])
        for f in files:
            run.save(f, base_path=os.path.dirname(f), policy="now")
    finally:
        run.finish()
    return run_id
