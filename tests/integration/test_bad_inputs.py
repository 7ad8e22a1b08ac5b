"""Bad input, table-driven, through the `metareward` command (`flows.cli:main`): every row must exit with its code,
print exactly one stderr line (blank lines aside) naming the culprit, no traceback, and leave an earlier finished
run in the same store, and everything else in the work folder, as it was (every file's bytes and mtime).

The earlier run ("victim") is made once per module on the fake engine with a stand-in trainer, stage by stage as
`metareward stage` runs them (no Prefect: seconds). Rows run `main()` in this process with sys.argv set, which is
what the console script does; rows with ``process=True`` run a real `python -m flows` process.

To add rows (store outages, relocated or damaged runs, ...): append `Case`s to CASES; a row's ``setup`` makes
its own input files under the work folder (idempotent: the work folder is shared by the module), ``patch``
monkeypatches the code the command reaches (in-process rows only).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from flows.cli import main

PROMPTS = "".join(json.dumps({"id": f"p{i}", "prompt": f"Explain topic number {i} in two sentences."}) + "\n"
                  for i in range(12))
LINES = PROMPTS.splitlines(keepends=True)
STORE = ["storage.root=store", "run.name=victim"]  # a bad start aimed at the finished run's own folder


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]  # the command line after `metareward`
    culprit: str  # what the one stderr line must contain (the file, line, field or URI, and what is wrong)
    code: int = 2
    one_line: bool = True  # False: a typer/click usage error (its own usage box, also exit 2)
    process: bool = False  # True: a real `python -m flows` process instead of main() in this process
    setup: Callable[[Path], None] | None = None  # extra input files under the work folder
    patch: Callable[[pytest.MonkeyPatch], None] | None = None  # in-process rows: code swapped for the row
    marks: list = field(default_factory=list)
    env: dict[str, str | None] = field(default_factory=dict)  # process rows: environment set (None: removed)


# ---------------------------------------------------------------------------------------------- input files


def _safetensors(tensors: dict[str, int]) -> bytes:
    """A safetensors file of float32 vectors (name -> length): an 8-byte header length, the JSON header, the data."""
    header, offset = {}, 0
    for name, n in tensors.items():
        header[name] = {"dtype": "F32", "shape": [n], "data_offsets": [offset, offset + 4 * n]}
        offset += 4 * n
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0" * offset


WHOLE = _safetensors({"w": 4, "b": 2})

FILES: dict[str, str | bytes] = {
    # recipes
    "bad.yaml": "run:\n  name: victim\n  iterations: [1,\n",  # flow sequence never closed
    "list.yaml": "- run\n- dpo\n",
    "section.yaml": "dpoo:\n  beta: 0.1\n",
    "nested.yaml": "judge:\n  nn: 3\n",
    "empty.yaml": "",
    "comments.yaml": "# every setting commented out\n# dpo:\n#   beta: 0.1\n",
    "dup.yaml": "run:\n  name: victim\n  seed: 1\ndpo:\n  beta: 0.1\n  learning_rate: 1.0e-6\n  beta: 0.2\n",
    "dupsection.yaml": "dpo:\n  beta: 0.1\nrun:\n  name: victim\ndpo:\n  beta: 0.2\n",
    "inf.yaml": "run:\n  name: victim\ndpo:\n  beta: .inf\n",
    "latin1.yaml": "run:\n  name: caf\xe9\n".encode("latin-1"),
    "recipes/smoke.yaml": "run:\n  name: victim\n",
    # prompt files
    "ok.jsonl": PROMPTS,
    "empty.jsonl": "",
    "blank.jsonl": "\n  \n\n",
    "three.jsonl": LINES[0] + '{"prompt": "A second distinct prompt"}\n{"prompt": "A third distinct prompt"}\n',
    "badline.jsonl": LINES[0] + LINES[1] + '{"prompt": "unterminated\n',
    "noprompt.jsonl": LINES[0] + '{"id": "x", "text": "no prompt key"}\n',
    "listrow.jsonl": '["a", "b"]\n',
    "latin1.jsonl": LINES[0].encode() + '{"prompt": "caf\xe9 au lait"}\n'.encode("latin-1"),
    # 12 prompts that cleaning shrinks: the same text 12 times; all shorter than min_chars; one-word variants
    "dups.jsonl": "".join(json.dumps({"id": f"d{i}", "prompt": "Explain photosynthesis in two sentences."}) + "\n"
                          for i in range(12)),
    "short.jsonl": "".join(json.dumps({"id": f"s{i}", "prompt": f"Hi {i}"}) + "\n" for i in range(12)),
    "near.jsonl": "".join(json.dumps({"id": f"n{i}", "prompt": "Explain in two careful sentences how plants turn "
                                      f"sunlight, water and air into sugar, variant {i}."}) + "\n" for i in range(12)),
    "promptsdir/keep": "",
    # benchmark files: an IFEval row without its instructions, an LLMBar pair without its second output
    "ifeval_noids.jsonl": json.dumps({"key": 1, "prompt": "Write a haiku.", "kwargs": [{}]}) + "\n",
    "llmbar_noout2.json": json.dumps([{"input": "Say hi.", "output_1": "Hi.", "label": 1}]),
    # datasets
    "d.csv": "text,id\nExplain topic number one in two sentences.,1\n",
    "d.jsonl": json.dumps({"text": "Explain topic number one in two sentences.", "id": 1}) + "\n",
    "bad.parquet": b"PAR1 this is not a parquet file",
    "dsdict/dataset_dict.json": json.dumps({"splits": ["test"]}),
    # model folders
    "badconfig/config.json": "{\n  \"model_type\": \n",
    "emptymodel/keep": "",
    "noweights/config.json": json.dumps({"model_type": "llama"}),
    "truncated/config.json": json.dumps({"model_type": "llama"}),
    "truncated/model.safetensors": WHOLE[:-5],
    "garbage/config.json": json.dumps({"model_type": "llama"}),
    "garbage/model.safetensors": b"these are not weights",
    "sharded/config.json": json.dumps({"model_type": "llama"}),
    "sharded/model.safetensors.index.json": json.dumps({"metadata": {}, "weight_map": {
        "w": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}),
    "sharded/model-00001-of-00002.safetensors": _safetensors({"w": 4}),
    "unknowntype/config.json": json.dumps({"model_type": "llama9000"}),
    "unknowntype/model.safetensors": WHOLE,
    "notype/config.json": json.dumps({"hidden_size": 8}),
    "notype/model.safetensors": WHOLE,
}


def _parquet(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["Explain topic number one in two sentences."]}), path)


# ---------------------------------------------------------------------------------------------- the table

R = ["run", "smoke"]
CASES = [
    # --- recipe files
    Case("malformed_yaml", ["run", "bad.yaml"], "bad.yaml: line 4 malformed YAML"),
    Case("yaml_not_a_mapping", ["run", "list.yaml"], "list.yaml: the top level must be a mapping"),
    Case("unknown_section", ["run", "section.yaml"], "section.yaml: dpoo: unknown key; did you mean 'dpo'?"),
    Case("unknown_nested_key", ["run", "nested.yaml"], "nested.yaml: judge.nn: unknown key; did you mean 'n'?"),
    Case("config_not_utf8", ["run", "latin1.yaml"], "latin1.yaml: line 2: not UTF-8 text"),
    Case("missing_config_file", ["run", "missing.yaml"], "missing.yaml: no such config file"),
    Case("unknown_recipe", ["run", "smokey"], "unknown recipe 'smokey'; shipped recipes: "),
    Case("empty_recipe", ["run", "empty.yaml"], "empty.yaml: empty file (no settings)"),
    Case("recipe_of_comments_only", ["run", "comments.yaml"], "comments.yaml: empty file (no settings)"),
    Case("recipe_key_twice", ["run", "dup.yaml"], "dup.yaml line 7: dpo.beta given twice"),
    Case("recipe_section_twice", ["run", "dupsection.yaml"], "dupsection.yaml line 5: dpo given twice"),
    Case("recipe_is_a_folder", ["run", "recipes"], "recipes: is a folder, expected a YAML config file"),
    Case("recipe_with_infinite_beta", ["run", "inf.yaml", "storage.root=store"],
         "inf.yaml + overrides: dpo.beta: Input should be a finite number"),
    # --- overrides: keys and syntax
    Case("override_unknown_key", [*R, "dpo.betta=0.2", *STORE], "dpo.betta: unknown key; did you mean 'beta'?"),
    Case("override_unknown_section", [*R, "actr.k=3", *STORE], "actr: unknown key; did you mean 'actor'?"),
    Case("override_without_equals", [*R, "dpo.beta", *STORE], "override 'dpo.beta': expected key=value"),
    Case("override_into_a_value", [*R, *STORE, "run.seed.x=1"], "run.seed is not a section"),
    Case("override_given_twice", [*R, "dpo.beta=0.1", *STORE, "dpo.beta=0.2"],
         "override dpo.beta: given twice on the command line"),
    Case("overrides_overlap", [*R, "dpo={beta: 0.1}", *STORE, "dpo.beta=0.2"], "overrides dpo and dpo.beta overlap"),
    Case("override_malformed_value", [*R, "pairs.rho=[0.0,", *STORE], "override 'pairs.rho=[0.0,': malformed YAML"),
    # --- values that cannot run
    Case("rho_above_one", [*R, "pairs.rho=[0.0, 1.5]", *STORE], "pairs.rho: Value error, every rho must lie in [0, 1]"),
    Case("rho_negative", [*R, "pairs.rho=[-0.1]", *STORE], "pairs.rho: Value error, every rho must lie in [0, 1]"),
    Case("rho_nan", [*R, "pairs.rho=[.nan]", *STORE], "pairs.rho.0: Input should be a finite number"),
    Case("k_below_two", [*R, "actor.k=1", *STORE], "actor.k: Input should be greater than or equal to 2"),
    Case("n_below_two_with_meta_judge", [*R, "judge.n=1", "pairs.judge_pairs=[true]", *STORE],
         "judge.n must be >= 2 when the meta-judge runs"),
    Case("beta_negative", [*R, "dpo.beta=-0.1", *STORE], "dpo.beta: Input should be greater than 0"),
    Case("beta_zero", [*R, "dpo.beta=0", *STORE], "dpo.beta: Input should be greater than 0"),
    Case("beta_infinite", [*R, "dpo.beta=inf", *STORE], "dpo.beta: Input should be a finite number"),
    Case("beta_nan", [*R, "dpo.beta=.nan", *STORE], "dpo.beta: Input should be a finite number"),
    Case("temperature_infinite", [*R, "actor.sampling.temperature=.inf", *STORE],
         "actor.sampling.temperature: Input should be a finite number"),
    Case("learning_rate_infinite", [*R, "dpo.learning_rate=1e999", *STORE],
         "dpo.learning_rate: Input should be a finite number"),
    Case("seed_beyond_32_bits", [*R, "run.seed=4294967296", *STORE],
         "run.seed: Input should be less than or equal to 4294967295"),
    Case("seed_negative", [*R, "run.seed=-1", *STORE], "run.seed: Input should be greater than or equal to 0"),
    Case("top_p_above_one", [*R, "actor.sampling.top_p=1.5", *STORE],
         "actor.sampling.top_p: Input should be less than or equal to 1"),
    Case("temperature_negative", [*R, "judge.sampling.temperature=-1", *STORE],
         "judge.sampling.temperature: Input should be greater than or equal to 0"),
    Case("iterations_not_a_number", [*R, "run.iterations=abc", *STORE], "run.iterations: Input should be a valid integer"),
    Case("iterations_zero", [*R, "run.iterations=0", *STORE], "run.iterations: Input should be greater than or equal to 1"),
    Case("learning_rate_negative", [*R, "dpo.learning_rate=-1e-6", *STORE], "dpo.learning_rate: Input should be greater than 0"),
    Case("warmup_ratio_one", [*R, "dpo.warmup_ratio=1.0", *STORE], "dpo.warmup_ratio: Input should be less than 1"),
    Case("gpu_memory_above_one", [*R, "engine.gpu_memory_utilization=2", *STORE], "engine.gpu_memory_utilization"),
    Case("unknown_backend", [*R, "engine.backend=gpt", *STORE], "engine.backend: Input should be 'transformers', 'vllm' or 'fake'"),
    Case("unknown_execution_mode", [*R, "execution.mode=remote", *STORE], "execution.mode: Input should be 'local'"),
    Case("max_chars_below_min", [*R, "prompts.min_chars=10", "prompts.max_chars=5", *STORE],
         "prompts.max_chars must be >= prompts.min_chars"),
    Case("path_and_dataset", [*R, "prompts.path=ok.jsonl", "prompts.dataset=ok.jsonl", *STORE],
         "set prompts.path or prompts.dataset, not both"),
    Case("parse_needs_tokens", [*R, "judge.scoring=parse", "judge.sampling.max_new_tokens=0", *STORE],
         "judge.sampling.max_new_tokens=0 needs judge.scoring=expected"),
    Case("global_batch_not_a_multiple", [*R, "dpo.global_batch_size=5", *STORE],
         "dpo.global_batch_size=5 is not a multiple of dpo.per_device_batch_size=2"),
    Case("arena_hard_without_files", [*R, "eval.arena_hard.enabled=true", *STORE],
         "eval.arena_hard: Value error, arena_hard needs questions and baseline_answers"),
    Case("decontam_total_reserved", [*R, "prompts.decontam.benchmarks={total: ok.jsonl}", *STORE],
         "prompts.decontam.benchmarks: Value error, 'total' is reserved"),
    # --- run names that would escape the store
    Case("run_name_with_slash", [*R, "storage.root=store", "run.name=a/b"], "run.name: Value error, must be letters"),
    Case("run_name_dotdot", [*R, "storage.root=store", "run.name=.."], "run.name: Value error, must be letters"),
    Case("run_name_parent", [*R, "storage.root=store", "run.name=../victim"], "run.name: Value error"),
    Case("run_name_backslash", [*R, "storage.root=store", "run.name=a\\b"], "run.name: Value error"),
    # --- prompt files
    Case("prompt_file_missing", [*R, "prompts.path=nope.jsonl", *STORE], "prompts.path nope.jsonl: no such file"),
    Case("prompt_path_is_a_folder", [*R, "prompts.path=promptsdir", *STORE],
         "prompts.path promptsdir: is a folder, expected a file"),
    Case("prompt_file_empty", [*R, "prompts.path=empty.jsonl", *STORE], "empty.jsonl: no prompts"),
    Case("prompt_file_blank_lines", [*R, "prompts.path=blank.jsonl", *STORE], "blank.jsonl: no prompts"),
    Case("prompt_file_bad_json_line", [*R, "prompts.path=badline.jsonl", *STORE], "badline.jsonl: line 3: invalid JSON"),
    Case("prompt_file_not_utf8", [*R, "prompts.path=latin1.jsonl", *STORE], "latin1.jsonl: line 2: not UTF-8 text"),
    Case("prompt_row_without_prompt", [*R, "prompts.path=noprompt.jsonl", *STORE],
         "noprompt.jsonl: line 2: expected an object with a non-empty 'prompt' string"),
    Case("prompt_row_not_object", [*R, "prompts.path=listrow.jsonl", *STORE], "listrow.jsonl: line 1: expected an object"),
    Case("eval_count_takes_every_prompt", [*R, "prompts.path=three.jsonl", "prompts.eval_count=3", *STORE],
         "three.jsonl: prompts.eval_count=3 leaves no training prompt of 3 (of 3 read)"),
    # 12 rows of one text: 11 exact duplicates go, 1 prompt is left for eval_count=8
    Case("cleaning_leaves_one_prompt", [*R, "prompts.path=dups.jsonl", *STORE],
         "dups.jsonl: prompts.eval_count=8 leaves no training prompt of 1 (of 12 read; cleaning dropped 11 "
         "duplicates_removed)"),
    Case("cleaning_drops_every_prompt", [*R, "prompts.path=short.jsonl", *STORE],
         "short.jsonl: prompts.eval_count=8 leaves no training prompt of 0 (of 12 read; cleaning dropped 12 too_short)"),
    Case("cleaning_drops_near_duplicates", [*R, "prompts.path=near.jsonl", "prompts.eval_count=1", *STORE],
         "near_duplicates_removed)"),
    # every prompt shares an 8-word n-gram with a benchmark question file that holds the same prompts
    Case("cleaning_drops_contaminated", [*R, "prompts.path=ok.jsonl", "prompts.decontam.benchmarks={mt: ok.jsonl}",
                                         "prompts.decontam.ngram=3", "prompts.near_duplicate_threshold=null", *STORE],
         "ok.jsonl: prompts.eval_count=8 leaves no training prompt of 0 (of 12 read; cleaning dropped 12 contaminated)"),
    Case("decontam_file_missing", [*R, "prompts.decontam.benchmarks={mt_bench: q.jsonl}", *STORE],
         "prompts.decontam.benchmarks.mt_bench q.jsonl: no such file"),
    Case("decontam_file_not_utf8", [*R, "prompts.decontam.benchmarks={mt_bench: latin1.jsonl}", *STORE],
         "prompts.decontam.benchmarks.mt_bench latin1.jsonl: line 2: not UTF-8 text"),
    Case("eft_file_missing", [*R, "eft.enabled=true", "eft.path=ranked.jsonl", *STORE], "eft.path ranked.jsonl: no such file"),
    Case("ifeval_prompts_missing", [*R, "eval.ifeval.prompts=input_data.jsonl", *STORE],
         "eval.ifeval.prompts input_data.jsonl: no such file"),
    Case("ifeval_row_without_instructions", [*R, "eval.ifeval.prompts=ifeval_noids.jsonl", *STORE],
         "ifeval_noids.jsonl: line 1: missing field 'instruction_id_list'"),
    Case("llmbar_set_missing", [*R, "eval.llmbar.sets={Natural: dataset.json}", *STORE],
         "eval.llmbar.sets.Natural dataset.json: no such file"),
    Case("llmbar_pair_without_output", [*R, "eval.llmbar.sets={Natural: llmbar_noout2.json}", *STORE],
         "llmbar_noout2.json: entry 1: missing field 'output_2'"),
    Case("drift_reference_judge_self", [*R, "health.drift.reference_judge.model=self", *STORE],
         "reference_judge.model 'self' is the own judge"),
    Case("drift_reference_judge_missing", [*R, "health.drift.reference_judge.model=./no-judge", *STORE],
         "health.drift.reference_judge.model ./no-judge: no such folder"),
    Case("mt_bench_questions_missing", [*R, "eval.mt_bench.enabled=true", "eval.mt_bench.questions=q.jsonl", *STORE],
         "eval.mt_bench.questions q.jsonl: no such file"),
    # --- datasets: the column is read from the header or schema
    Case("dataset_file_missing", [*R, "prompts.path=null", "prompts.dataset=./nope.parquet", *STORE],
         "prompts.dataset ./nope.parquet: no such file or folder"),
    Case("csv_without_prompt_column", [*R, "prompts.dataset=d.csv", *STORE],
         "prompts.dataset d.csv: no column 'prompt' (columns: text, id)"),
    Case("jsonl_without_prompt_column", [*R, "prompts.dataset=d.jsonl", *STORE],
         "prompts.dataset d.jsonl: no column 'prompt' (columns: text, id)"),
    Case("parquet_without_prompt_column", [*R, "prompts.dataset=d.parquet", *STORE],
         "prompts.dataset d.parquet: no column 'prompt' (columns: text)", setup=lambda w: _parquet(w / "d.parquet")),
    Case("csv_without_id_column", [*R, "prompts.dataset=d.csv", "prompts.column=text", "prompts.id_column=uid", *STORE],
         "prompts.dataset d.csv: no column 'uid'"),
    Case("parquet_unreadable", [*R, "prompts.dataset=bad.parquet", *STORE], "prompts.dataset bad.parquet: unreadable Parquet"),
    Case("saved_dataset_without_split", [*R, "prompts.dataset=dsdict", *STORE],
         "prompts.dataset dsdict: no split 'train' (splits: test)"),
    # --- model folders
    Case("model_path_missing", [*R, "model.path=./no-model", *STORE], "model.path ./no-model: no such folder"),
    Case("model_path_is_a_file", [*R, "model.path=ok.jsonl", *STORE], "model.path ok.jsonl: not a folder"),
    Case("model_folder_without_config", [*R, "model.path=emptymodel", *STORE], "model.path emptymodel: folder has no config.json"),
    Case("model_config_unreadable", [*R, "model.path=badconfig", *STORE], "badconfig/config.json: line 3: unreadable config.json"),
    Case("model_without_weights", [*R, "model.path=noweights", *STORE], "model.path noweights: no weights (expected model.safetensors"),
    Case("model_weights_truncated", [*R, "model.path=truncated", *STORE],
         f"truncated/model.safetensors: truncated or damaged weights ({len(WHOLE) - 5} bytes, the header describes "
         f"{len(WHOLE)})"),
    Case("model_weights_not_safetensors", [*R, "model.path=garbage", *STORE],
         "garbage/model.safetensors: not a safetensors file"),
    Case("model_shard_missing", [*R, "model.path=sharded", *STORE],
         "sharded/model-00002-of-00002.safetensors: shard named in model.safetensors.index.json is missing"),
    Case("model_type_unknown", [*R, "model.path=unknowntype", *STORE],
         "unknowntype/config.json: model_type 'llama9000' is not an architecture this transformers knows"),
    Case("model_type_absent", [*R, "model.path=notype", *STORE], "notype/config.json: no model_type"),
    Case("pool_model_missing", [*R, "prompt_pool.enabled=true", "prompt_pool.model_path=/no/such/model", *STORE],
         "prompt_pool.model_path /no/such/model: no such folder"),
    # --- the store
    Case("store_root_is_a_file", [*R, "storage.root=ok.jsonl"], "ok.jsonl/smoke: Not a directory"),
    Case("store_protocol_unknown", [*R, "storage.root=foo://bucket/runs"],
         "storage.root=foo://bucket/runs: unknown protocol 'foo://'"),
    # --- CLI usage (typer's own usage box, exit 2) and the stage command
    Case("unknown_command", ["rnu", "smoke"], "No such command 'rnu'", one_line=False),
    Case("unknown_option", ["status", "victim", "--root", "store", "--bogus"], "No such option: --bogus", one_line=False),
    Case("missing_argument", ["run"], "Missing argument", one_line=False),
    Case("export_iter_without_model", ["export", "victim", "out", "--iter", "1", "--root", "store"],
         "--iter and --dataset-repo go with --model", one_line=False),
    Case("stage_unknown", ["stage", "judgee", "victim", "--root", "store"], "unknown stage 'judgee'; stages: "),
    Case("stage_iteration_beyond_run", ["stage", "generate", "victim", "--iter", "3", "--root", "store"],
         "generate --iter 3: run victim has iterations 0 to 1"),
    Case("stage_replica_out_of_range", ["stage", "judge", "victim", "--replica", "2", "--replicas", "2", "--root", "store"],
         "judge --replica/--replicas: replica 2 of 2: expected 0 <= replica < replicas"),
    Case("interrupted", ["status", "victim", "--root", "store"], "interrupted: finished stages are kept", code=130,
         patch=lambda mp: mp.setattr("metareward.pipeline.calls.stored_config", _interrupt)),
    # --- resume / status / report of runs that are not there or are damaged
    Case("resume_unknown_run", ["resume", "ghost", "--root", "store"], "store/ghost/config.json: no such run"),
    Case("resume_corrupt_config", ["resume", "broken", "--root", "store"], "broken/config.json: line 2: invalid JSON"),
    Case("resume_stale_config", ["resume", "stale", "--root", "store"],
         "stale/config.json: dpo.betta: unknown key; did you mean 'beta'?"),
    Case("resume_config_not_an_object", ["resume", "listconfig", "--root", "store"],
         "listconfig/config.json: (top level): Input should be a valid dictionary"),
    Case("status_unknown_run", ["status", "ghost", "--root", "store"], "store/ghost/config.json: no such run"),
    Case("status_manifest_not_json", ["status", "badmanifest", "--root", "store"],
         "badmanifest/iter_0/benchmark/manifest.json: line 1: invalid JSON"),
    Case("stage_of_corrupt_run", ["stage", "judge", "broken", "--root", "store"], "broken/config.json: line 2: invalid JSON"),
    # --- the same lines from real processes
    Case("process_bad_override", [*R, "pairs.rho=[2]", *STORE], "pairs.rho: Value error, every rho must lie in [0, 1]",
         process=True),
    Case("process_key_twice", ["run", "dup.yaml"], "dup.yaml line 7: dpo.beta given twice", process=True),
    Case("process_truncated_weights", [*R, "model.path=truncated", *STORE], "truncated or damaged weights", process=True),
    Case("process_unknown_stage", ["stage", "judgee", "victim", "--root", "store"], "unknown stage 'judgee'", process=True),
    # --- the run store: damaged runs, folders that are not runs, unreachable or unusable stores
    Case("report_of_damaged_run", ["report", "damaged", "--root", "store"], "judgments.jsonl"),
    Case("export_of_damaged_run", ["export", "damaged", "out", "--root", "store"], "judgments.jsonl"),
    Case("status_manifest_wrong_shape", ["status", "wrongshape", "--root", "store"], "wrongshape/iter_1/judge/manifest.json"),
    Case("report_manifest_wrong_shape", ["report", "wrongshape", "--root", "store"], "wrongshape/iter_1/judge/manifest.json"),
    Case("report_of_empty_folder", ["report", "store/notarun"], "notarun/config.json: no such run"),
    Case("status_of_empty_folder", ["status", "store/notarun"], "notarun/config.json: no such run"),
    Case("resume_of_empty_folder", ["resume", "store/notarun"], "notarun/config.json: no such run"),
    Case("export_of_empty_folder", ["export", "store/notarun", "out"], "notarun/config.json: no such run"),
    Case("status_root_unknown_protocol", ["status", "victim", "--root", "foo://bucket/runs"], "unknown protocol 'foo://'"),
    Case("store_without_credentials", [*R, "storage.root=s3://bucket/runs"], "no credentials for the store", process=True,
         env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None,
              "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
              "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}),
    Case("store_endpoint_closed", [*R, "storage.root=s3://bucket/runs", "storage.timeout_s=1", "storage.outage_s=3"],
         "s3://bucket/runs/smoke/config.json: write failed for", process=True,
         env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "not-a-secret", "AWS_EC2_METADATA_DISABLED": "true",
              "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}),
]


def _interrupt(*a, **kw):
    raise KeyboardInterrupt


# ---------------------------------------------------------------------------------------------- the work folder


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The input files of every row, and a store holding the finished run "victim" and some damaged runs."""
    w = tmp_path_factory.mktemp("bad-inputs")
    for name, content in FILES.items():
        p = w / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    for case in CASES:
        if case.setup:
            case.setup(w)
    (w / "seed").mkdir()
    (w / "seed" / "config.json").write_text('{"model_type": "fake"}')
    _finished_run(w)
    store = w / "store"
    for name, text in {"broken": '{\n  "run": {"name": "broken",}\n}\n', "stale": json.dumps({"dpo": {"betta": 0.1}}),
                       "listconfig": "[1, 2]"}.items():
        (store / name).mkdir()
        (store / name / "config.json").write_text(text)
    shutil.copytree(store / "victim", store / "damaged")
    (store / "damaged" / "iter_1" / "judge" / "judgments.jsonl").unlink()
    shutil.copytree(store / "victim", store / "wrongshape")
    (store / "wrongshape" / "iter_1" / "judge" / "manifest.json").write_text("{}")
    (store / "notarun").mkdir()
    shutil.copytree(store / "victim", store / "badmanifest")
    (store / "badmanifest" / "iter_0" / "benchmark" / "manifest.json").write_text("{\"stage\": ")
    return w


def _finished_run(w: Path) -> None:
    """Every stage of iteration 1 and the baseline benchmark, as `metareward stage` runs them, on the fake engine
    and a stand-in DPO."""
    import metareward.training.dpo
    from metareward.config import load_config
    from metareward.pipeline import calls
    from metareward.registry import ITERATION

    def train_dpo(pairs, model_path, output_dir, dpo, **kw):
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        Path(output_dir, "config.json").write_text(json.dumps({"beta": dpo.beta, "pairs": len(pairs)}))
        return {"steps": 1, "train_loss": 0.69, "n_pairs": len(pairs), "log_history": [{"loss": 0.69}]}

    cfg = load_config("smoke", [f"storage.root={w / 'store'}", "run.name=victim", "engine.backend=fake",
                                "execution.stage_process=inline", f"model.path={w / 'seed'}",
                                "eval.mt_bench.enabled=false", "eval.alpaca_eval.enabled=false"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metareward.training.dpo, "train_dpo", train_dpo)
        calls.save_config(cfg)
        for stage in ITERATION[:-1]:  # then M_0's benchmark, which M_1's drift guard reads, and M_1's
            calls.run(cfg, stage, 1)
        calls.run(cfg, "answers", 0)
        calls.run(cfg, "benchmark", 0)
        calls.run(cfg, "benchmark", 1)
    assert (w / "store" / "victim" / "iter_1" / "train" / "manifest.json").is_file()


def _snapshot(folder: Path) -> dict[str, tuple[str, int] | None]:
    """Every file's digest and mtime, every folder by name: what a bad start must leave as it was."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            if p.is_file() else None for p in sorted(folder.rglob("*"))}


def _main(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["metareward", *argv])
    with pytest.raises(SystemExit) as exit_:
        main()
    code = exit_.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


def _process(argv: list[str], cwd: Path, env: dict[str, str | None] | None = None) -> tuple[int, str]:
    environ = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    p = subprocess.run([sys.executable, "-m", "flows", *argv], capture_output=True, text=True, cwd=cwd, timeout=300,
                       env=environ)
    return p.returncode, p.stderr


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_one_line_and_harmless(work, monkeypatch, capsys, case: Case):
    monkeypatch.chdir(work)
    victim_config = (work / "store" / "victim" / "config.json").read_bytes()
    before = _snapshot(work)
    if case.process:
        code, err = _process(case.argv, work, case.env)
    else:
        if case.patch:
            case.patch(monkeypatch)
        code, err = _main(case.argv, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == case.code, err
    assert "Traceback" not in err
    if case.one_line:
        assert len(lines) == 1, err
        assert case.culprit in lines[0], lines[0]
        assert lines[0].startswith("error: ") or case.code == 130, lines[0]
    else:
        assert case.culprit in err, err
    after = _snapshot(work)
    assert after == before, sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert (work / "store" / "victim" / "config.json").read_bytes() == victim_config


def test_the_table_is_broad():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(CASES) >= 40
    assert sum(c.process for c in CASES) >= 3


def test_debug_shows_the_traceback(work):
    code, err = _process(["run", "dup.yaml", "--debug"], work)
    assert code != 0 and "Traceback (most recent call last)" in err and "ConfigError: " in err
