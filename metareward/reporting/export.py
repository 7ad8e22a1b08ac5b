"""A run's data as a Hugging Face dataset folder: one config per kind, one split per iteration, and a dataset card;
and a run's model M_t as a Hugging Face model folder with a model card.

    metareward export smoke exported/smoke              # runs/smoke -> exported/smoke/
    metareward export smoke exported/smoke --push-to-hub me/smoke-prefs
    metareward export smoke exported/smoke-m2 --model --iter 2 --dataset-repo me/smoke-prefs

The folder holds ``<config>/<split>.parquet`` and a README.md whose YAML header lists the configs, their data files
per split and their sizes, so ``datasets.load_dataset(folder, "actor_pairs", split="iter1")`` reads it as the Hub
would. Configs: ``actor_pairs`` and ``judge_pairs`` (TRL's conversational prompt/chosen/rejected, plus ids and
scores), ``judgments`` and ``meta_verdicts`` (the records as stored). A split exists where the iteration has rows of
that kind (iteration 2 without a meta-judge has no ``meta_verdicts`` split).

The model folder holds M_t's files as the train stage saved them (byte for byte; their `store.folder_digest` is
checked against the train manifest's) and a README.md whose YAML header is the Hub's model card metadata.

`datasets` and `huggingface_hub` are imported inside functions only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from metareward.records import Judgment, Manifest, MetaVerdict, PreferencePair
from metareward.reporting import measures
from metareward.reporting.tables import model_cache
from metareward.runstore import integrity, remote, store
from metareward.runstore.layout import RunLayout

CONFIGS = ("actor_pairs", "judge_pairs", "judgments", "meta_verdicts")
# Where each config's rows come from: (stage, manifest file name).
SOURCES = {"actor_pairs": ("pairs", "pairs"), "judge_pairs": ("pairs", "pairs"), "judgments": ("judge", "judgments"),
           "meta_verdicts": ("meta_judge", "verdicts")}
# The paper the run reproduces (method.md).
PAPER = "https://arxiv.org/abs/2407.19594"
METHOD = ("one model acts as actor (K responses per prompt), judge (N scored judgments per response) and meta-judge "
          "(which of two judgments is better, in both orders). Actor pairs prefer the best-scored response to the "
          "worst; judge pairs prefer the judgment the meta-judge ranks higher (Elo). Both train M_t from M_{t-1} by "
          "DPO.")
COMPARABLE = ("Benchmark figures labelled *comparable to published* used the official judge and questions; the others "
              "(the run's own model as judge, the mini sets) show trends within this run only.")
MODEL_TAGS = ["meta-rewarding", "dpo", "trl", "llm-as-a-judge", "self-rewarding"]
# A Hub model id as `model.path` names one (``org/name``); a local folder or the embedded model is not one.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def split_name(t: int) -> str:
    """``iter1``: a name the Hub accepts (``^\\w+(\\.\\w+)*$``), unlike ``iter-1``."""
    return f"iter{t}"


def pair_row(p: PreferencePair) -> dict:
    """A pair as TRL's conversational preference row, with where it came from."""
    return {"prompt": [{"role": "user", "content": p.prompt}],
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
            "prompt_id": p.prompt_id, "chosen_id": p.chosen_id, "rejected_id": p.rejected_id,
            "chosen_score": p.chosen_score, "rejected_score": p.rejected_score}


def features(config: str):
    """Each config's column types, fixed so an all-None column (``score_probs``) keeps its type."""
    from datasets import Features, List, Value

    message = List({"role": Value("string"), "content": Value("string")})
    if config in ("actor_pairs", "judge_pairs"):
        return Features({"prompt": message, "chosen": message, "rejected": message, "prompt_id": Value("string"),
                         "chosen_id": Value("string"), "rejected_id": Value("string"),
                         "chosen_score": Value("float64"), "rejected_score": Value("float64")})
    if config == "judgments":
        return Features({"id": Value("string"), "response_id": Value("string"), "prompt_id": Value("string"),
                         "text": Value("string"), "score": Value("float64"), "score_probs": List(Value("float64"))})
    return Features({"prompt_id": Value("string"), "response_id": Value("string"), "a_id": Value("string"),
                     "b_id": Value("string"), "text": Value("string"), "winner": Value("string"),
                     "p_a": Value("float64")})


def iteration_rows(run: RunLayout, t: int) -> dict[str, list[dict]]:
    """Iteration t's rows per config, from the stages' manifests (a stage without one gives no rows)."""
    out = {}
    for config, (stage, name) in SOURCES.items():
        m = _stage(run, t, stage)
        if m is None or name not in m.files:
            continue
        if config.endswith("_pairs"):
            kind = config.split("_")[0]
            out[config] = [pair_row(p) for p in store.read_jsonl(m.files[name], PreferencePair) if p.kind == kind]
        else:
            model = Judgment if config == "judgments" else MetaVerdict
            out[config] = [r.model_dump() for r in store.read_jsonl(m.files[name], model)]
    return {k: v for k, v in out.items() if v}


def write_split(dest: str, config: str, t: int, rows: list[dict]) -> dict:
    """One split as ``<config>/<split>.parquet``; its size figures as the card's dataset_info gives them."""
    import pyarrow.parquet as pq
    from datasets import Dataset

    ds = Dataset.from_list(rows, features=features(config))
    rel = f"{config}/{split_name(t)}.parquet"
    os.makedirs(os.path.join(dest, config), exist_ok=True)
    pq.write_table(ds.data.table, os.path.join(dest, rel))  # the schema carries the features; no progress bar
    return {"name": split_name(t), "path": rel, "num_examples": ds.num_rows, "num_bytes": ds.data.nbytes,
            "file_bytes": os.path.getsize(os.path.join(dest, rel))}


def card_header(splits: dict[str, list[dict]]) -> dict:
    """The card's YAML header: ``configs`` (data_files per split) and ``dataset_info`` (features, split sizes)."""
    configs, infos = [], []
    for config, rows in splits.items():
        configs.append({"config_name": config,
                        "data_files": [{"split": s["name"], "path": s["path"]} for s in rows]})
        infos.append({"config_name": config, "features": features(config)._to_yaml_list(),
                      "splits": [{"name": s["name"], "num_bytes": s["num_bytes"], "num_examples": s["num_examples"]}
                                 for s in rows],
                      "download_size": sum(s["file_bytes"] for s in rows),
                      "dataset_size": sum(s["num_bytes"] for s in rows)})
    return {"license": "other", "language": ["en"], "tags": ["dpo", "preference", "meta-rewarding", "llm-as-a-judge"],
            "task_categories": ["text-generation"], "configs": configs, "dataset_info": infos}


def export_run(run_folder: str, dest: str) -> dict:
    """Write every iteration's data and the card into folder ``dest``; returns the header (configs, sizes)."""
    import yaml

    run = RunLayout.at(run_folder).stored()
    splits: dict[str, list[dict]] = {c: [] for c in CONFIGS}
    for t in (t for t in run.iterations() if t > 0):
        for config, rows in iteration_rows(run, t).items():
            splits[config].append(write_split(dest, config, t, rows))
    splits = {c: s for c, s in splits.items() if s}
    if not splits:
        raise store.StoreError(f"{run.run}: no iteration has pairs, judgments or verdicts to export")
    header = card_header(splits)
    body = card_body(run, splits)
    text = "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n" + body
    with open(os.path.join(dest, "README.md"), "w") as f:
        f.write(text)
    return header


def push(dest: str, repo: str, private: bool = True, repo_type: str = "dataset") -> str:
    """Upload the exported folder as Hub repo ``repo`` of ``repo_type`` (dataset or model; token: HF_TOKEN or the
    `hf auth login` one); its URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, repo_type=repo_type, private=private, exist_ok=True)
    api.upload_folder(folder_path=dest, repo_id=repo, repo_type=repo_type, commit_message="metareward export")
    return f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo}"


def finished_train(run: RunLayout, t: int | None = None) -> Manifest:
    """Iteration t's train manifest (None: the last iteration whose train stage finished); a one-line StoreError
    naming the stage folder when that stage has not finished."""
    its = [i for i in run.iterations() if i > 0]  # a missing run folder says so first
    if t is None:
        done = [i for i in its if store.read_manifest(run.stage(i, "train")) is not None]
        if not done:
            raise store.StoreError(f"{run.run}: no iteration's train stage has finished, so there is no M_t yet")
        t = done[-1]
    m = _stage(run, t, "train")
    if m is None or "model" not in m.files:
        raise store.StoreError(f"{run.stage(t, 'train')}: the train stage of iteration {t} has not finished "
                               f"(no manifest), so M_{t} does not exist yet")
    return m


def export_model(run_folder: str, dest: str, t: int | None = None, dataset_repo: str | None = None) -> dict:
    """Copy M_t (iteration t's train stage model; None: the last finished) into the new or empty folder ``dest``
    and write its model card; returns ``{"iteration", "digest", "files", "header"}``."""
    import yaml

    run = RunLayout.at(run_folder).stored()
    m = finished_train(run, t)
    if os.path.isdir(dest) and os.listdir(dest):
        raise store.StoreError(f"{dest}: not empty; export a model into a new or empty folder")
    remote.download_folder(m.files["model"], Path(dest))  # a local folder or an s3:// one alike
    digest, expected = store.folder_digest(os.path.abspath(dest)), m.digests.get("model")
    if digest != expected:
        raise store.StoreError(f"{dest}: the copy's digest {digest} is not M_{m.iteration}'s {expected} "
                               f"({m.uri}/manifest.json)")
    files = len(remote.folder_files(dest))
    header = model_card_header(_json_or_empty(run.seed_record), dataset_repo)
    text = "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n"
    with open(os.path.join(dest, "README.md"), "w") as f:
        f.write(text + model_card_body(run, m, dataset_repo))
    return {"iteration": m.iteration, "digest": digest, "files": files, "header": header}


def hub_model_id(seed: dict) -> str | None:
    """The seed model's Hub id when M_0 was made from one (``model.path`` a hub id: the seed record's local copy
    is that id's Hub snapshot), else None: a local folder or the embedded model has no Hub page to name."""
    source = seed.get("made_from")
    if not isinstance(source, str) or not HUB_ID.fullmatch(source) or os.path.exists(source):
        return None
    uri = (seed.get("model") or {}).get("uri") or ""
    if uri and not remote.is_remote(uri) and f"models--{source.replace('/', '--')}" not in uri:
        return None
    return source


def model_card_header(seed: dict, dataset_repo: str | None) -> dict:
    """The model card's YAML header: no license (the run does not know the seed model's; add it before pushing)."""
    header: dict = {}
    if base := hub_model_id(seed):
        header["base_model"] = base
    header.update({"library_name": "transformers", "pipeline_tag": "text-generation", "tags": MODEL_TAGS})
    if dataset_repo:
        header["datasets"] = [dataset_repo]
    return header


def _figure(value) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _trained(run: RunLayout, t: int) -> tuple[list[str], list[str]]:
    """Iterations 1..t as table rows (pair counts, DPO figures, M_i's digest) and the benchmark lines of M_0..M_t."""
    rows, bench = [], []
    for i in range(t + 1):
        ms = _manifests(run, i)
        lines = _benchmarks(ms.get("benchmark"))
        bench += [f"- M_{i}:", *lines] if lines else []
        if i == 0:
            continue
        pairs = ms["pairs"].counts if "pairs" in ms else {}
        train = ms["train"].stats if "train" in ms else {}
        loss = train.get("final_loss", train.get("train_loss"))
        rows.append(f"| {i} | {pairs.get('actor_pairs', '-')} | {pairs.get('judge_pairs', '-')} | "
                    f"{train.get('n_pairs_used', train.get('n_pairs', '-'))} | {train.get('steps', '-')} | "
                    f"{_figure(loss)} | `{ms['train'].digests.get('model') if 'train' in ms else '-'}` |")
    return rows, bench


def model_card_body(run: RunLayout, m: Manifest, dataset_repo: str | None) -> str:
    """The model card's prose: the method, M_t's and the seed model's digests, the iterations (pairs, DPO, digests),
    the benchmark results, and the training settings (the run config's ``dpo`` section)."""
    cfg, t = _json_or_empty(run.config), m.iteration
    rows, bench = _trained(run, t)
    eft = _stage(run, 0, "eft")
    data = (f"[`{dataset_repo}`](https://huggingface.co/datasets/{dataset_repo})" if dataset_repo else
            f"`metareward export {run.name} DEST` writes it as a Hugging Face dataset")
    lines = [f"# Meta-Rewarding run `{run.name}`: M_{t}", "",
             f"M_{t}, the model after {t} Meta-Rewarding iteration(s) ([Wu et al. 2024]({PAPER})) of run "
             f"`{run.name}`: {METHOD} Each iteration makes that data with the model it starts from.", "",
             "## Model", "",
             f"- M_{t}: digest `{m.digests.get('model')}` (`metareward.runstore.store.folder_digest` of this folder's "
             f"files but README.md), train manifest `{m.digest}`", _seed_line(run, cfg)]
    if eft is not None:
        lines.append(f"- M_0 as trained on: the seed model after EFT, digest `{eft.digests.get('model')}`")
    lines += ["", "## Iterations", "",
              "| iteration | actor pairs | judge pairs | DPO pairs used | steps | final loss | model digest |",
              "|---|---|---|---|---|---|---|", *rows, "", f"Preference data: {data}.", ""]
    if bench:
        lines += ["## Benchmarks", "", *bench, "", COMPARABLE, ""]
    dpo = cfg.get("dpo") or {}
    lines += ["## Training settings", "", "DPO (policy and reference start from M_{t-1}; the run's `config.json`):",
              "", *(f"- {k}: {v}" for k, v in dpo.items()), "", "The run:", "", *_settings(cfg), ""]
    return "\n".join(lines)


def _manifests(run: RunLayout, t: int) -> dict[str, Manifest]:
    found = {s: _stage(run, t, s) for s in
             ("prompts", "generate", "judge", "meta_judge", "pairs", "train", "benchmark")}
    return {s: m for s, m in found.items() if m is not None}


def _stage(run: RunLayout, t: int, stage: str) -> Manifest | None:
    """A finished stage's manifest; a damaged one (a file missing or altered) is a one-line error, never exported."""
    return integrity.checked(run.stage(t, stage), model_cache(run))


def _settings(cfg: dict) -> list[str]:
    """The settings a reader needs to redo the run (from the stored config.json)."""
    get = lambda section, key: (cfg.get(section) or {}).get(key)  # noqa: E731
    return [f"- seed: {get('run', 'seed')}; iterations: {get('run', 'iterations')}",
            f"- actor: K = {get('actor', 'k')} responses per prompt, sampling {get('actor', 'sampling')}",
            f"- judge: N = {get('judge', 'n')} judgments per response, scoring {get('judge', 'scoring')}",
            f"- meta-judge: scoring {get('meta_judge', 'scoring')}, position weights "
            f"{get('meta_judge', 'position_weights')}",
            f"- pairs: rho {get('pairs', 'rho')}, judge pairs {get('pairs', 'judge_pairs')}",
            f"- DPO: beta {get('dpo', 'beta')}, learning rate {get('dpo', 'learning_rate')}",
            f"- engine: {get('engine', 'backend')}"]


def _json_or_empty(uri: str) -> dict:
    return store.read_json(uri) if store.exists(uri) else {}


def _seed_line(run: RunLayout, cfg: dict) -> str:
    seed = _json_or_empty(run.seed_record)
    return (f"- seed model M_0: {seed.get('made_from', (cfg.get('model') or {}).get('path'))}, "
            f"digest `{(seed.get('model') or {}).get('digest')}`")


def _health(run: RunLayout, t: int) -> str:
    if not store.exists(run.health(t)):
        return "no health record"
    judge = store.read_json(run.health(t)).get("judge") or {}
    m = judge.get("metrics") or {}
    return (f"judge health {'passed' if judge.get('passed') else 'FAILED ' + str(judge.get('failed'))}: "
            f"parse rate {m.get('parse_rate')}, tie rate {m.get('tie_rate')}, "
            f"score entropy {m.get('score_entropy')} bits")


def _benchmarks(m: Manifest | None) -> list[str]:
    """Each benchmark result with its judge and whether it is comparable to published figures; then the judge-free
    measures (IFEval, LLMBar) with their 95% intervals, and the drift figures (`metareward.reporting.measures`)."""
    if m is None:
        return []
    out = []
    for name, result in m.stats.items():
        if isinstance(result, dict) and "label" in result:
            figure = next((f"{k} {result[k]:.4g}" for k in ("score", "win_rate", "lc_win_rate", "agreement")
                           if isinstance(result.get(k), (int, float))), "")
            out.append(f"  - {name}: {figure} (judge {result.get('judge')}; {result['label']})")
    return out + measures.card_lines(m.stats)


def _iteration_section(run: RunLayout, t: int, splits: dict[str, list[dict]]) -> list[str]:
    ms = _manifests(run, t)
    sizes = ", ".join(f"{c} {s['num_examples']}" for c, rows in splits.items() for s in rows
                      if s["name"] == split_name(t))
    lines = [f"### Iteration {t} (split `{split_name(t)}`)", "", f"- rows: {sizes or 'none'}",
             f"- {_health(run, t)}"]
    if "train" in ms:
        lines.append(f"- M_{t}: digest `{ms['train'].digests.get('model')}`")
    lines.append("- manifest digests: " + ", ".join(f"{s} `{m.digest}`" for s, m in ms.items()))
    bench = _benchmarks(ms.get("benchmark"))
    return lines + (["- benchmark of M_%d:" % t] + bench if bench else []) + [""]


def card_body(run: RunLayout, splits: dict[str, list[dict]]) -> str:
    """The card's prose: the method, the model and its digest, settings and seeds, counts, health, digests."""
    cfg = _json_or_empty(run.config)
    its = sorted({int(s["name"][4:]) for rows in splits.values() for s in rows})
    lines = [f"# Meta-Rewarding run `{run.name}`", "",
             f"Preference data from a Meta-Rewarding run ([Wu et al. 2024]({PAPER})): {METHOD}",
             "", "## Configs", "",
             "- `actor_pairs`, `judge_pairs`: TRL conversational preference rows (`prompt`, `chosen`, `rejected` "
             "message lists) with ids and scores; `DPOTrainer` takes them as they are.",
             "- `judgments`: every judgment, its parsed or expected score (None: unparsed).",
             "- `meta_verdicts`: every meta-judge verdict; `a_id` was shown first; `winner` None is a tie.",
             "", "Splits: `iter<t>`, one per iteration.", "", "## Model", "", _seed_line(run, cfg), "", "## Settings", "", *_settings(cfg), "", "## Iterations", ""]
    for t in its:
        lines += _iteration_section(run, t, splits)
    lines += [COMPARABLE, ""]
    return "\n".join(lines)
