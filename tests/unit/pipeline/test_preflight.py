"""The input checks run before a run touches the store (`metareward.pipeline.preflight`), function by function.

The table of bad inputs through the `metareward` command, with the finished run they must leave untouched, is
tests/integration/test_bad_inputs.py.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from metareward.config import load_config
from metareward.engines.models import ModelNotFound
from metareward.inputs.prompt_sets import PromptFileError
from metareward.pipeline import preflight


def _model(folder: Path, config: dict, weights: dict[str, bytes]) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    for name, data in weights.items():
        (folder / name).write_bytes(data)
    return folder


def _real_safetensors(path: Path, **arrays) -> bytes:
    """Written by the safetensors library itself, so the check is held to the real format."""
    import numpy as np
    from safetensors.numpy import save_file

    save_file({k: np.arange(n, dtype=np.float32) for k, n in arrays.items()}, str(path))
    return path.read_bytes()


def test_a_whole_model_folder_passes_and_a_cut_one_is_named(tmp_path):
    data = _real_safetensors(tmp_path / "w.safetensors", embed=6, head=3)
    # header: 8-byte length + JSON; data: (6 + 3) float32 = 36 bytes, so the file ends exactly at 8 + n + 36
    n = struct.unpack("<Q", data[:8])[0]
    assert len(data) == 8 + n + 36
    ok = _model(tmp_path / "ok", {"model_type": "llama"}, {"model.safetensors": data})
    preflight.check_model("model.path", str(ok))
    cut = _model(tmp_path / "cut", {"model_type": "llama"}, {"model.safetensors": data[:-1]})
    with pytest.raises(ModelNotFound, match=rf"cut/model.safetensors: truncated or damaged weights "
                                            rf"\({len(data) - 1} bytes, the header describes {len(data)}\)"):
        preflight.check_model("model.path", str(cut))
    longer = _model(tmp_path / "longer", {"model_type": "llama"}, {"model.safetensors": data + b"\0"})
    with pytest.raises(ModelNotFound, match="truncated or damaged"):
        preflight.check_model("model.path", str(longer))
    header_cut = _model(tmp_path / "hc", {"model_type": "llama"}, {"model.safetensors": data[: 8 + n // 2]})
    with pytest.raises(ModelNotFound, match="hc/model.safetensors: not a safetensors file"):
        preflight.check_model("model.path", str(header_cut))


def test_every_shard_of_an_index_is_present_and_whole(tmp_path):
    one = _real_safetensors(tmp_path / "1.safetensors", a=4)
    two = _real_safetensors(tmp_path / "2.safetensors", b=2)
    index = json.dumps({"weight_map": {"a": "m-1.safetensors", "b": "m-2.safetensors"}}).encode()
    ok = _model(tmp_path / "ok", {"model_type": "qwen2"}, {"model.safetensors.index.json": index,
                                                          "m-1.safetensors": one, "m-2.safetensors": two})
    preflight.check_model("model.path", str(ok))
    missing = _model(tmp_path / "missing", {"model_type": "qwen2"}, {"model.safetensors.index.json": index,
                                                                    "m-1.safetensors": one})
    with pytest.raises(ModelNotFound, match="missing/m-2.safetensors: shard named in model.safetensors.index.json"):
        preflight.check_model("model.path", str(missing))
    cut = _model(tmp_path / "cut", {"model_type": "qwen2"}, {"model.safetensors.index.json": index,
                                                            "m-1.safetensors": one, "m-2.safetensors": two[:-4]})
    with pytest.raises(ModelNotFound, match="cut/m-2.safetensors: truncated"):
        preflight.check_model("model.path", str(cut))
    bad = _model(tmp_path / "bad", {"model_type": "qwen2"}, {"model.safetensors.index.json": b"[]"})
    with pytest.raises(ModelNotFound, match="unreadable index"):
        preflight.check_model("model.path", str(bad))


def test_model_type_must_be_known_unless_the_folder_brings_its_code(tmp_path):
    w = _real_safetensors(tmp_path / "w.safetensors", a=2)
    odd = _model(tmp_path / "odd", {"model_type": "mymodel"}, {"model.safetensors": w})
    with pytest.raises(ModelNotFound, match="model_type 'mymodel' is not an architecture .*trust_remote_code"):
        preflight.check_model("model.path", str(odd))
    custom = _model(tmp_path / "custom", {"model_type": "mymodel", "auto_map": {"AutoConfig": "conf.MyConfig"}},
                    {"model.safetensors": w})
    preflight.check_model("model.path", str(custom), trust_remote_code=True)
    with pytest.raises(ModelNotFound, match="not an architecture"):
        preflight.check_model("model.path", str(custom))  # its code is not trusted
    bin_only = _model(tmp_path / "bin", {"model_type": "gpt2"}, {"pytorch_model.bin": b"x"})
    preflight.check_model("model.path", str(bin_only))  # .bin weights: present is all that is checked


def test_the_fake_engine_needs_only_a_config(tmp_path):
    """The tests' stand-in engine loads no weights: a folder with a config.json is a seed model for it."""
    seed = _model(tmp_path / "seed", {"model_type": "fake"}, {})
    preflight.check(load_config("smoke", [f"model.path={seed}", "engine.backend=fake"]))
    with pytest.raises(ModelNotFound, match="model_type 'fake' is not an architecture"):
        preflight.check(load_config("smoke", [f"model.path={seed}"]))


def test_dataset_columns_come_from_the_header(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"question": ["Explain topic one in two sentences."], "qid": [1]}), tmp_path / "d.parquet")
    (tmp_path / "d.csv").write_text("question,qid\n\"Explain, with commas\",1\n")
    (tmp_path / "d.jsonl").write_text(json.dumps({"question": "Explain topic one.", "qid": 1}) + "\n")
    (tmp_path / "list.json").write_text(json.dumps([{"question": "Explain topic one."}], indent=1))
    saved = tmp_path / "saved"
    (saved / "train").mkdir(parents=True)
    (saved / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    (saved / "train" / "dataset_info.json").write_text(json.dumps({"features": {"question": {}, "qid": {}}}))
    for name in ("d.parquet", "d.csv", "d.jsonl", "saved"):
        ds = str(tmp_path / name)
        preflight.check(load_config("smoke", [f"prompts.dataset={ds}", "prompts.column=question",
                                              "prompts.id_column=qid"]))
        with pytest.raises(PromptFileError, match=rf"{name}: no column 'prompt' \(columns: question, qid\)"):
            preflight.check(load_config("smoke", [f"prompts.dataset={ds}"]))
    # one JSON document over many lines: its columns need the whole file, so the prompts stage reads it
    preflight.check(load_config("smoke", [f"prompts.dataset={tmp_path / 'list.json'}"]))
    with pytest.raises(PromptFileError, match="saved: no split 'test' \\(splits: train\\)"):
        preflight.check(load_config("smoke", [f"prompts.dataset={saved}", "prompts.split=test",
                                              "prompts.column=question"]))


def test_prompts_are_counted_after_the_stages_cleaning(tmp_path):
    """10 prompts, 2 of them exact duplicates (case and spaces) and 1 too short: 7 are left, so eval_count=7
    leaves none to train on, eval_count=6 leaves one."""
    texts = [f"Explain topic number {i} in two sentences, please." for i in range(7)]
    texts += [texts[0].upper(), "  " + texts[1] + "  ", "Hi"]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": t}) + "\n" for i, t in enumerate(texts)))
    base = [f"prompts.path={path}", "prompts.near_duplicate_threshold=null"]
    with pytest.raises(PromptFileError, match=r"p.jsonl: prompts.eval_count=7 leaves no training prompt of 7 "
                                              r"\(of 10 read; cleaning dropped 2 duplicates_removed, 1 too_short\)"):
        preflight.check(load_config("smoke", [*base, "prompts.eval_count=7"]))
    preflight.check(load_config("smoke", [*base, "prompts.eval_count=6"]))


def test_a_large_source_is_checked_without_the_near_duplicate_pass(tmp_path, monkeypatch):
    """6 variants of one sentence: the near-duplicate pass keeps 1 (eval_count=2 fails); above NEAR_DEDUPE_MAX
    the check skips that pass, and 6 prompts (an upper bound on what the stage keeps) pass it."""
    texts = [f"Explain in two careful sentences how plants turn sunlight into sugar, variant {i}." for i in range(6)]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": t}) + "\n" for i, t in enumerate(texts)))
    cfg = load_config("smoke", [f"prompts.path={path}", "prompts.eval_count=2"])
    with pytest.raises(PromptFileError, match=r"leaves no training prompt of 1 \(of 6 read; cleaning dropped 5 "
                                              r"near_duplicates_removed\)"):
        preflight.check(cfg)
    monkeypatch.setattr(preflight, "NEAR_DEDUPE_MAX", 5)
    preflight.check(cfg)


def test_a_folder_given_for_a_file_is_named_so(tmp_path):
    with pytest.raises(PromptFileError, match=f"prompts.path {tmp_path}: is a folder, expected a file"):
        preflight.check(load_config("smoke", [f"prompts.path={tmp_path}"]))
    with pytest.raises(PromptFileError, match="eval.mt_bench.questions .*: is a folder, expected a file"):
        preflight.check(load_config("smoke", [f"eval.mt_bench.questions={tmp_path}"]))


# ------------------------------------------------------------------ not errors: removed or skipped, and counted


def _write_prompts(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": t}) + "\n" for i, t in enumerate(texts)))


def test_duplicate_prompts_are_removed_and_counted(tmp_path):
    from metareward.pipeline import stages
    from metareward.config import load_config

    texts = [f"Explain topic number {i} in two sentences, please." for i in range(12)]
    texts += [texts[0], "  EXPLAIN topic number 1 in two sentences, please.  "]  # exact, and case/space variant
    _write_prompts(tmp_path / "p.jsonl", texts)
    cfg = load_config("smoke", [f"storage.root={tmp_path}", f"prompts.path={tmp_path / 'p.jsonl'}",
                                "prompts.eval_count=2", "prompts.per_iteration=null",
                                "prompts.near_duplicate_threshold=null"])
    m = stages.prompts(cfg, 1)
    assert (m.counts["read"], m.counts["duplicates_removed"], m.counts["prompts"], m.counts["eval_prompts"]) == \
           (14, 2, 10, 2)


def test_prompts_longer_than_the_context_are_skipped_and_counted(tmp_path, monkeypatch):
    """Fake engine context: 60 'tokens' (words); actor max_new_tokens 8, so a prompt may have 52 words at most.
    Judge prompts (the rubric template, a few hundred words) are all longer: every response goes unjudged."""
    from metareward.pipeline import modelrefs, stages
    from metareward.config import load_config
    from metareward.engines.fake import FakeEngine
    from metareward.records import ModelRef

    texts = [f"Explain topic number {i} in two sentences, please." for i in range(10)]
    texts[3] = "Summarise this: " + " ".join(f"word{i}" for i in range(60))  # 62 words
    _write_prompts(tmp_path / "p.jsonl", texts)
    cfg = load_config("smoke", [f"storage.root={tmp_path}", f"prompts.path={tmp_path / 'p.jsonl'}",
                                "prompts.eval_count=1", "prompts.per_iteration=null", "engine.backend=fake",
                                "prompts.near_duplicate_threshold=null",
                                "actor.sampling.max_new_tokens=8", "health.enabled=false"])
    monkeypatch.setattr(modelrefs, "open_model_engine", lambda cfg, model: FakeEngine(context_length=60))
    model = ModelRef(uri="fake", digest="m0", iteration=0)
    gen = stages.generate(cfg, 1, model, stages.prompts(cfg, 1))
    assert (gen.counts["prompts"], gen.counts["too_long_for_context"], gen.counts["responses"]) == (9, 1, 8 * 4)
    judged = stages.judge(cfg, 1, model, gen)
    assert (judged.counts["judgments"], judged.counts["too_long_for_context"]) == (0, 32)


def test_doctests():
    import doctest

    from metareward.pipeline import preflight

    result = doctest.testmod(preflight)
    assert result.attempted > 0 and result.failed == 0
