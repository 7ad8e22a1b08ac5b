"""How the IFEval parity fixtures in ``tests/data/ifeval/`` were made (tests/unit/evals/test_ifeval.py reads them;
tests/data/ifeval/README.md has the figures). Three steps, each re-runnable on its own:

    # 1. our model's answers: SmolLM2-135M-Instruct (the embedded default), transformers engine on the CPU, greedy,
    #    chat template, max_new_tokens 256, all 541 prompts; {key, response} rows in
    #    /tmp/ifeval_official_out/smollm2_responses.jsonl (about 20 min on a shared 2-core CPU)
    nice -n 10 .venv/bin/python bench/ifeval_parity.py generate

    # 2. the official evaluator on the GPT-4 responses and on ours. OFFICIAL holds the package
    #    OFFICIAL/instruction_following_eval/ (google-research's folder of that name, with its data/; or the files of
    #    the first commit of Podtech-AI/IFEval, 5bdf377, a copy of it, plus an empty __init__.py), run in this venv
    #    (pip install absl-py). Outputs: /tmp/ifeval_official_out/{gpt4,smollm2}/eval_results_{strict,loose}.jsonl
    .venv/bin/python bench/ifeval_parity.py official --official OFFICIAL

    # 3. the fixtures: responses keyed by IFEval key (gzip), the official per-row verdicts, the output files' digests
    .venv/bin/python bench/ifeval_parity.py fixtures --official OFFICIAL

The prompts are ``../shared/ifeval/input_data.jsonl`` (env METAREWARD_IFEVAL_PROMPTS overrides), never committed.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "ifeval"
GPT4 = "data/input_response_data_gpt4_20231107_145030.jsonl"
OUT = Path("/tmp/ifeval_official_out")


def prompts_path() -> Path:
    return Path(os.environ.get("METAREWARD_IFEVAL_PROMPTS", ROOT.parent / "shared" / "ifeval" / "input_data.jsonl"))


def load_jsonl(path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path, rows: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if path.suffix == ".gz":
        with gzip.GzipFile(path, "wb", mtime=0) as f:  # mtime 0: the same bytes on every regeneration
            f.write(data.encode())
    else:
        path.write_text(data, encoding="utf-8")


def generate(args) -> None:
    """Greedy answers of the embedded model, in chunks so a partial run still leaves usable rows."""
    from metareward.engines.models import embedded_model_path
    from metareward.engines.transformers_engine import TransformersEngine
    from metareward.evals.harness import chat_generate

    rows = load_jsonl(prompts_path())[: args.limit]
    out = Path(args.out)
    done = {r["key"]: r for r in load_jsonl(out)} if out.is_file() else {}
    engine = TransformersEngine(embedded_model_path(), batch_size=args.batch_size)
    t0 = time.time()
    todo = [r for r in rows if r["key"] not in done]
    for i in range(0, len(todo), args.chunk):
        part = todo[i:i + args.chunk]
        texts, _ = chat_generate(engine, [[{"role": "user", "content": r["prompt"]}] for r in part],
                                 args.max_new_tokens, seed=0)
        done.update({r["key"]: {"key": r["key"], "response": t} for r, t in zip(part, texts)})
        write_jsonl(out, [done[r["key"]] for r in rows if r["key"] in done])
        print(f"{len(done)}/{len(rows)} rows, {time.time() - t0:.0f} s", flush=True)
    print(json.dumps({"rows": len(done), "seconds": round(time.time() - t0, 1), "max_new_tokens": args.max_new_tokens,
                      "batch_size": args.batch_size, "model": "SmolLM2-135M-Instruct (embedded)"}))


def official_inputs(official: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (input_data, {prompt, response} file) for the official evaluator. GPT-4's published responses
    answer 540 of the 541 prompts (key 2785's prompt was edited upstream later), so its input is those 540 rows,
    lines copied as they are; ours are joined to their prompts by key."""
    lines = [line for line in prompts_path().read_text(encoding="utf-8").splitlines(keepends=True) if line.strip()]
    gpt4_file = official / "instruction_following_eval" / GPT4
    answered = {r["prompt"] for r in load_jsonl(gpt4_file)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gpt4_input_data.jsonl").write_text(
        "".join(line for line in lines if json.loads(line)["prompt"] in answered), encoding="utf-8")
    prompts = {r["key"]: r["prompt"] for r in map(json.loads, lines)}
    write_jsonl(OUT / "smollm2_input_response.jsonl",
                [{"prompt": prompts[r["key"]], "response": r["response"]} for r in load_jsonl(smollm2_responses())])
    return {"gpt4": (OUT / "gpt4_input_data.jsonl", gpt4_file),
            "smollm2": (prompts_path(), OUT / "smollm2_input_response.jsonl")}


def smollm2_responses() -> Path:
    """Step 1's output where it is still there, else the committed fixture."""
    fresh = OUT / "smollm2_responses.jsonl"
    return fresh if fresh.is_file() else DATA / "smollm2_responses.jsonl.gz"


# The official evaluation_main, run with the determinism our scorer adds, which the official code leaves to chance:
# langdetect seeded, and random seeded at 0 before each checker is built (it draws only for a missing or invalid
# kwarg: the letters "#" and "!" of keys 1122 and 1129); and with Punkt's English model from the installed package,
# as our scorer gets it.
RUNNER = """
import functools, random, sys
from langdetect import DetectorFactory
DetectorFactory.seed = 0
from metareward.evals.ifeval import install_punkt
install_punkt()
from absl import app
from instruction_following_eval import evaluation_main, instructions_registry

def seeded(build):
    @functools.wraps(build)
    def seeded_build(self, *args, **kwargs):
        random.seed(0)
        return build(self, *args, **kwargs)
    return seeded_build

for cls in set(instructions_registry.INSTRUCTION_DICT.values()):
    cls.build_description = seeded(cls.build_description)
sys.argv = ["evaluation_main", "--input_data=" + sys.argv[1], "--input_response_data=" + sys.argv[2],
            "--output_dir=" + sys.argv[3]]
app.run(evaluation_main.main)
"""


def official(args) -> None:
    root = Path(args.official).resolve()
    for name, (inputs, responses) in official_inputs(root).items():
        if name not in args.sets.split(","):
            continue
        out = OUT / name
        out.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{ROOT}", "HF_HUB_OFFLINE": "1"}
        subprocess.run([sys.executable, "-c", RUNNER, str(inputs), str(responses), str(out)],
                       check=True, env=env, cwd=root, stdout=subprocess.DEVNULL)
        print(f"{name}: {out}/eval_results_strict.jsonl, eval_results_loose.jsonl")


def fixtures(args) -> None:
    """Responses keyed by IFEval key; the official verdicts per key ``{key, strict: [...], loose: [...]}``; the
    sha256 of the official output files (the test writes ours and compares the bytes' digests)."""
    root = Path(args.official).resolve()
    key_of = {r["prompt"]: r["key"] for r in load_jsonl(prompts_path())}
    gpt4 = load_jsonl(root / "instruction_following_eval" / GPT4)
    write_jsonl(DATA / "gpt4_responses.jsonl.gz",
                [{"key": key_of[r["prompt"]], "response": r["response"]} for r in gpt4 if r["prompt"] in key_of])
    write_jsonl(DATA / "smollm2_responses.jsonl.gz", load_jsonl(smollm2_responses()))
    digests = {}
    for name in ("gpt4", "smollm2"):
        strict = load_jsonl(OUT / name / "eval_results_strict.jsonl")
        loose = {r["prompt"]: r for r in load_jsonl(OUT / name / "eval_results_loose.jsonl")}
        rows = [{"key": key_of[s["prompt"]], "strict": s["follow_instruction_list"],
                 "loose": loose[s["prompt"]]["follow_instruction_list"]} for s in strict]
        write_jsonl(DATA / f"{name}_official_verdicts.jsonl", rows)
        digests[name] = {f: hashlib.sha256((OUT / name / f).read_bytes()).hexdigest()[:16]
                         for f in ("eval_results_strict.jsonl", "eval_results_loose.jsonl")}
        print(f"{name}: {len(rows)} rows")
    (DATA / "official_digests.json").write_text(json.dumps(digests, indent=2) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--out", default=str(OUT / "smollm2_responses.jsonl"))
    g.add_argument("--limit", type=int, default=None)
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--chunk", type=int, default=64)
    for name in ("official", "fixtures"):
        s = sub.add_parser(name)
        s.add_argument("--official", required=True, help="folder holding the instruction_following_eval package")
        s.add_argument("--sets", default="gpt4,smollm2", help="response sets, comma-separated")
    args = p.parse_args()
    {"generate": generate, "official": official, "fixtures": fixtures}[args.cmd](args)


if __name__ == "__main__":
    main()
