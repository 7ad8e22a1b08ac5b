"""Bad input, table-driven, through the real CLI entry point (`flows.cli:main`, the `metareward` command): every case must exit
non-zero with exactly one stderr line naming the file, line or field, no traceback, and leave the run store
byte-for-byte as it was (its digest before == after).

Each case runs `main()` in this process with sys.argv set, which is what the console script does; the
subprocess tests at the bottom check that a real process prints the same line (and the traceback with --debug).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main

PROMPTS = "".join(json.dumps({"id": f"p{i}", "prompt": f"Explain topic number {i} in two sentences."}) + "\n"
                  for i in range(12))


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A work folder holding the input files of the cases, and a run store with a finished stage in it."""
    monkeypatch.chdir(tmp_path)
    files = {
        "bad.yaml": "run:\n  name: victim\n  iterations: [1,\n",  # flow sequence never closed
        "list.yaml": "- run\n- dpo\n",
        "section.yaml": "dpoo:\n  beta: 0.1\n",
        "nested.yaml": "judge:\n  nn: 3\n",
        "ok.yaml": "run:\n  name: victim\n",
        "empty.jsonl": "",
        "blank.jsonl": "\n  \n\n",
        "three.jsonl": PROMPTS.splitlines(keepends=True)[0] * 1 + '{"prompt": "A second distinct prompt"}\n'
                       + '{"prompt": "A third distinct prompt"}\n',
        "badline.jsonl": PROMPTS.splitlines(keepends=True)[0] + PROMPTS.splitlines(keepends=True)[1]
                         + '{"prompt": "unterminated\n',
        "noprompt.jsonl": PROMPTS.splitlines(keepends=True)[0] + '{"id": "x", "text": "no prompt key"}\n',
        "listrow.jsonl": '["a", "b"]\n',
        "badconfig/config.json": "{\n  \"model_type\": \n",
        "ok.jsonl": PROMPTS,
    }
    for name, text in files.items():
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_text(text, encoding="utf-8")
    Path("latin1.yaml").write_bytes("run:\n  name: caf\xe9\n".encode("latin-1"))
    Path("latin1.jsonl").write_bytes(PROMPTS.splitlines(keepends=True)[0].encode()
                                     + '{"prompt": "caf\xe9 au lait"}\n'.encode("latin-1"))
    Path("emptymodel").mkdir()
    # the run store: a run with one finished stage, a run whose config.json is corrupt, one with a stale field
    store = Path("store")
    stage = store / "victim" / "iter_1" / "prompts"
    stage.mkdir(parents=True)
    (store / "victim" / "config.json").write_text(json.dumps({"run": {"name": "victim"}}))
    (stage / "prompts.jsonl").write_text(PROMPTS)
    (stage / "manifest.json").write_text(json.dumps({"stage": "prompts", "key": "abc"}))
    (store / "broken").mkdir()
    (store / "broken" / "config.json").write_text('{\n  "run": {"name": "broken",}\n}\n')
    (store / "stale").mkdir()
    (store / "stale" / "config.json").write_text(json.dumps({"dpo": {"betta": 0.1}}))
    return tmp_path


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


RUN = ["run"]
STORE = ["storage.root=store", "run.name=victim"]

# (case id, argv, text the one-line message must contain). Overrides put the run in the victim's store.
CASES = [
    # --- the recipe / YAML file
    ("malformed_yaml", ["run", "bad.yaml"], "bad.yaml: line 4 malformed YAML"),
    ("yaml_not_a_mapping", ["run", "list.yaml"], "list.yaml: the top level must be a mapping"),
    ("unknown_section", ["run", "section.yaml"], "section.yaml: dpoo: unknown key; did you mean 'dpo'?"),
    ("unknown_nested_key", ["run", "nested.yaml"], "nested.yaml: judge.nn: unknown key; did you mean 'n'?"),
    ("config_not_utf8", ["run", "latin1.yaml"], "latin1.yaml: line 2: not UTF-8 text"),
    ("missing_config_file", ["run", "missing.yaml"], "missing.yaml: no such config file"),
    ("unknown_recipe", ["run", "smokey"], "unknown recipe 'smokey'; shipped recipes: "),
    # --- overrides: unknown keys and syntax
    ("override_unknown_key", ["run", "smoke", "dpo.betta=0.2", *STORE], "dpo.betta: unknown key; did you mean 'beta'?"),
    ("override_unknown_section", ["run", "smoke", "actr.k=3", *STORE], "actr: unknown key; did you mean 'actor'?"),
    ("override_without_equals", ["run", "smoke", "dpo.beta", *STORE], "override 'dpo.beta': expected key=value"),
    ("override_into_a_value", ["run", "smoke", *STORE, "run.seed.x=1"], "run.seed is not a section"),
    # --- out-of-range values
    ("rho_above_one", ["run", "smoke", "pairs.rho=[0.0, 1.5]", *STORE], "pairs.rho: Value error, every rho must lie in [0, 1]"),
    ("rho_negative", ["run", "smoke", "pairs.rho=[-0.1]", *STORE], "pairs.rho: Value error, every rho must lie in [0, 1]"),
    ("k_below_two", ["run", "smoke", "actor.k=1", *STORE], "actor.k: Input should be greater than or equal to 2"),
    ("n_below_two_with_meta_judge", ["run", "smoke", "judge.n=1", "pairs.judge_pairs=[true]", *STORE],
     "judge.n must be >= 2 when the meta-judge runs"),
    ("beta_negative", ["run", "smoke", "dpo.beta=-0.1", *STORE], "dpo.beta: Input should be greater than 0"),
    ("beta_zero", ["run", "smoke", "dpo.beta=0", *STORE], "dpo.beta: Input should be greater than 0"),
    ("top_p_above_one", ["run", "smoke", "actor.sampling.top_p=1.5", *STORE], "actor.sampling.top_p: Input should be less than or equal to 1"),
    ("temperature_negative", ["run", "smoke", "judge.sampling.temperature=-1", *STORE], "judge.sampling.temperature: Input should be greater than or equal to 0"),
    ("iterations_not_a_number", ["run", "smoke", "run.iterations=abc", *STORE], "run.iterations: Input should be a valid integer"),
    ("iterations_zero", ["run", "smoke", "run.iterations=0", *STORE], "run.iterations: Input should be greater than or equal to 1"),
    ("learning_rate_negative", ["run", "smoke", "dpo.learning_rate=-1e-6", *STORE], "dpo.learning_rate: Input should be greater than 0"),
    ("warmup_ratio_one", ["run", "smoke", "dpo.warmup_ratio=1.0", *STORE], "dpo.warmup_ratio: Input should be less than 1"),
    ("gpu_memory_above_one", ["run", "smoke", "engine.gpu_memory_utilization=2", *STORE], "engine.gpu_memory_utilization"),
    ("unknown_backend", ["run", "smoke", "engine.backend=gpt", *STORE], "engine.backend: Input should be 'transformers', 'vllm' or 'fake'"),
    ("unknown_execution_mode", ["run", "smoke", "execution.mode=remote", *STORE], "execution.mode: Input should be 'local'"),
    ("max_chars_below_min", ["run", "smoke", "prompts.min_chars=10", "prompts.max_chars=5", *STORE],
     "prompts.max_chars must be >= prompts.min_chars"),
    ("path_and_dataset", ["run", "smoke", "prompts.path=ok.jsonl", "prompts.dataset=ok.jsonl", *STORE],
     "set prompts.path or prompts.dataset, not both"),
    ("parse_needs_tokens", ["run", "smoke", "judge.scoring=parse", "judge.sampling.max_new_tokens=0", *STORE],
     "judge.sampling.max_new_tokens=0 needs judge.scoring=expected"),
    ("arena_hard_without_files", ["run", "smoke", "eval.arena_hard.enabled=true", *STORE],
     "eval.arena_hard: Value error, arena_hard needs questions and baseline_answers"),
    ("decontam_total_reserved", ["run", "smoke", "prompts.decontam.benchmarks={total: ok.jsonl}", *STORE],
     "prompts.decontam.benchmarks: Value error, 'total' is reserved"),
    # --- run names that would escape the store
    ("run_name_with_slash", ["run", "smoke", "storage.root=store", "run.name=a/b"], "run.name: Value error, must be letters"),
    ("run_name_dotdot", ["run", "smoke", "storage.root=store", "run.name=.."], "run.name: Value error, must be letters"),
    ("run_name_parent", ["run", "smoke", "storage.root=store", "run.name=../victim"], "run.name: Value error"),
    ("run_name_backslash", ["run", "smoke", "storage.root=store", "run.name=a\\b"], "run.name: Value error"),
    # --- prompt files
    ("prompt_file_missing", ["run", "smoke", "prompts.path=nope.jsonl", *STORE], "prompts.path nope.jsonl: no such file"),
    ("prompt_file_empty", ["run", "smoke", "prompts.path=empty.jsonl", *STORE], "empty.jsonl: no prompts"),
    ("prompt_file_blank_lines", ["run", "smoke", "prompts.path=blank.jsonl", *STORE], "blank.jsonl: no prompts"),
    ("prompt_file_bad_json_line", ["run", "smoke", "prompts.path=badline.jsonl", *STORE], "badline.jsonl: line 3: invalid JSON"),
    ("prompt_file_not_utf8", ["run", "smoke", "prompts.path=latin1.jsonl", *STORE], "latin1.jsonl: line 2: not UTF-8 text"),
    ("prompt_row_without_prompt", ["run", "smoke", "prompts.path=noprompt.jsonl", *STORE],
     "noprompt.jsonl: line 2: expected an object with a non-empty 'prompt' string"),
    ("prompt_row_not_object", ["run", "smoke", "prompts.path=listrow.jsonl", *STORE], "listrow.jsonl: line 1: expected an object"),
    ("eval_count_takes_every_prompt", ["run", "smoke", "prompts.path=three.jsonl", "prompts.eval_count=3", *STORE],
     "prompts.eval_count=3 leaves no training prompt of 3"),
    ("dataset_file_missing", ["run", "smoke", "prompts.path=null", "prompts.dataset=./nope.parquet", *STORE],
     "prompts.dataset ./nope.parquet: no such file or folder"),
    ("decontam_file_missing", ["run", "smoke", "prompts.decontam.benchmarks={mt_bench: q.jsonl}", *STORE],
     "prompts.decontam.benchmarks.mt_bench q.jsonl: no such file"),
    ("decontam_file_not_utf8", ["run", "smoke", "prompts.decontam.benchmarks={mt_bench: latin1.jsonl}", *STORE],
     "prompts.decontam.benchmarks.mt_bench latin1.jsonl: line 2: not UTF-8 text"),
    ("eft_file_missing", ["run", "smoke", "eft.enabled=true", "eft.path=ranked.jsonl", *STORE], "eft.path ranked.jsonl: no such file"),
    ("mt_bench_questions_missing", ["run", "smoke", "eval.mt_bench.enabled=true", "eval.mt_bench.questions=q.jsonl", *STORE],
     "eval.mt_bench.questions q.jsonl: no such file"),
    # --- model paths
    ("model_path_missing", ["run", "smoke", "model.path=./no-model", *STORE], "model.path ./no-model: no such folder"),
    ("model_path_is_a_file", ["run", "smoke", "model.path=ok.jsonl", *STORE], "model.path ok.jsonl: not a folder"),
    ("model_folder_without_config", ["run", "smoke", "model.path=emptymodel", *STORE], "model.path emptymodel: folder has no config.json"),
    ("model_config_unreadable", ["run", "smoke", "model.path=badconfig", *STORE], "badconfig/config.json: line 3: unreadable config.json"),
    ("pool_model_missing", ["run", "smoke", "prompt_pool.enabled=true", "prompt_pool.model_path=/no/such/model", *STORE],
     "prompt_pool.model_path /no/such/model: no such folder"),
    # --- the store
    ("store_root_is_a_file", ["run", "smoke", "storage.root=ok.jsonl"], "ok.jsonl/smoke: Not a directory"),
    # --- resume / status
    ("resume_unknown_run", ["resume", "ghost", "--root", "store"], "store/ghost/config.json: no such run"),
    ("resume_corrupt_config", ["resume", "broken", "--root", "store"], "broken/config.json: line 2: invalid JSON"),
    ("resume_stale_config", ["resume", "stale", "--root", "store"], "stale/config.json: dpo.betta: unknown key; did you mean 'beta'?"),
    ("status_unknown_run", ["status", "ghost", "--root", "store"], "store/ghost/config.json: no such run"),
]


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_harmless(ws, monkeypatch, capsys, argv, expected):
    before, top = _digest(ws / "store"), sorted(p.name for p in ws.iterdir())
    monkeypatch.setattr(sys, "argv", ["metareward", *argv])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code not in (0, None)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in err
    assert _digest(ws / "store") == before
    assert sorted(p.name for p in ws.iterdir()) == top  # no default "runs" store, nothing else written


def test_enough_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "flows", *args], capture_output=True, text=True, cwd=cwd)


def test_a_real_process_prints_the_same_line_and_debug_shows_the_traceback(ws):
    p = _cli("run", "smoke", "pairs.rho=[2]", cwd=ws)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["error: recipe smoke + overrides: pairs.rho: Value error, every rho "
                                             "must lie in [0, 1]"]
    p = _cli("run", "smoke", "pairs.rho=[2]", "--debug", cwd=ws)
    assert p.returncode != 0 and "Traceback (most recent call last)" in p.stderr and "ConfigError" in p.stderr


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
