"""LLMBar's files for the parity test (tests/data/llmbar/) and the shipped Natural set, from an LLMBar checkout.

    git clone https://github.com/princeton-nlp/LLMBar /tmp/llmbar && git -C /tmp/llmbar checkout 900616bf
    .venv/bin/python bench/llmbar_fixtures.py /tmp/llmbar            # writes the fixtures below
    .venv/bin/python bench/llmbar_fixtures.py /tmp/llmbar --check    # scores every evaluators/ folder there

Writes (paths under tests/data/llmbar/ mirror LLMBar's own):
- folders.json: for every Dataset/LLMBar/<set>/evaluators/<evaluator>/<prompt>/ folder, what the scorer reads
  (label and the last result's two winners per row) and that folder's statistics.json, untouched;
- three untouched result.json + statistics.json pairs; the Vanilla prompt file; its rendering for one item by
  LLMBar's own prompt_to_chatml (taken from evaluate.py's source, run as is); every distinct completion of the
  Vanilla* folders with the verdict LLMBar stored for it (the parse cases);
- metareward/data/llmbar_natural.json: Dataset/LLMBar/Natural/dataset.json, byte for byte.

``--check`` compares ``metareward.evals.llmbar.statistics`` with statistics.json in every evaluators/ folder of
the checkout (CaseStudy and Processed too), without writing anything.
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "llmbar"
COMMIT = "900616bff90b6c6c8e1681f7d079250637c55992"
FULL = ("Dataset/LLMBar/Adversarial/GPTOut/evaluators/LLaMA2/Vanilla",        # one unparsed winner
        "Dataset/LLMBar/Adversarial/GPTOut/evaluators/PaLM2/Reference",       # two results per row, one unparsed
        "Dataset/LLMBar/Adversarial/GPTOut/evaluators/GPT-4/Rating_Metrics_Reference")  # three, rating rows
VANILLA = "LLMEvaluator/evaluators/prompts/comparison/Vanilla.txt"
RENDERED_ITEM = 4   # Natural entry (1-based) rendered in both orders


def _load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def _code(w) -> str:
    return "-" if w is None else w


def compact_folder(folder: Path) -> dict:
    """'<label><winner swap=False><winner swap=True>' per row ('-' for null), and statistics.json as stored."""
    rows = _load(folder / "result.json")
    codes = [f"{r['label']}{_code(r['results'][-1]['swap = False']['winner'])}"
             f"{_code(r['results'][-1]['swap = True']['winner'])}" for r in rows]
    return {"rows": " ".join(codes), "statistics": _load(folder / "statistics.json")}


def folders(src: Path, pattern: str) -> list[Path]:
    return sorted(p.parent for p in src.glob(f"{pattern}/evaluators/*/*/result.json"))


def prompt_to_chatml(src: Path):
    """evaluate.py's own prompt_to_chatml, compiled from its source (the module imports openai, torch, ...)."""
    tree = ast.parse((src / "LLMEvaluator/evaluate.py").read_text(encoding="utf-8"))
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "prompt_to_chatml")
    namespace: dict = {}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "evaluate.py", "exec"), namespace)
    return namespace["prompt_to_chatml"]


def rendering(src: Path) -> dict:
    """Vanilla.txt filled as evaluate.py's annotate does (format_map, outputs swapped), split by prompt_to_chatml."""
    template = (src / VANILLA).read_text(encoding="utf-8")
    item = _load(src / "Dataset/LLMBar/Natural/dataset.json")[RENDERED_ITEM - 1]
    to_chatml = prompt_to_chatml(src)
    out = {"source": f"Dataset/LLMBar/Natural/dataset.json entry {RENDERED_ITEM}", "item": item}
    for swap in (False, True):
        kwargs = {"input": item["input"], "output_1": item["output_2" if swap else "output_1"],
                  "output_2": item["output_1" if swap else "output_2"]}
        out[f"swap = {swap}"] = to_chatml(template.format_map(kwargs))
    return out


def parse_cases(src: Path) -> list[list]:
    """[completion, verdict on the shown order (1, 2 or null)], distinct, from the Vanilla* folders' results."""
    cases: dict[str, int | None] = {}
    for folder in folders(src, "Dataset/LLMBar/**"):
        if not folder.name.startswith("Vanilla"):
            continue
        for row in _load(folder / "result.json"):
            for swap in (False, True):
                r = row["results"][-1][f"swap = {swap}"]
                w = None if r["winner"] is None else int(r["winner"])
                shown = 3 - w if swap and w else w
                if cases.setdefault(r["completion"][0], shown) != shown:
                    raise SystemExit(f"{folder}: {r['completion'][0]!r} stored as both {cases[r['completion'][0]]}"
                                     f" and {shown}")
    return [[text, w] for text, w in sorted(cases.items(), key=lambda kv: kv[0])]


def write(src: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    found = folders(src, "Dataset/LLMBar/**")
    compact = {"source": f"github.com/princeton-nlp/LLMBar @ {COMMIT}",
               "rows": "per row: label, winner of 'swap = False', winner of 'swap = True' (results[-1]); - = null",
               "folders": {str(f.relative_to(src)): compact_folder(f) for f in found}}
    (OUT / "folders.json").write_text(json.dumps(compact, indent=0) + "\n")   # ~260 KB: plain, not gzipped
    for rel in FULL:
        (OUT / rel).mkdir(parents=True, exist_ok=True)
        for name in ("result.json", "statistics.json"):
            shutil.copyfile(src / rel / name, OUT / rel / name)
    (OUT / VANILLA).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / VANILLA, OUT / VANILLA)
    (OUT / "vanilla_rendering.json").write_text(json.dumps(rendering(src), indent=1, ensure_ascii=False) + "\n")
    (OUT / "parse_cases.json").write_text(json.dumps(parse_cases(src), indent=0, ensure_ascii=False) + "\n")
    shutil.copyfile(src / "Dataset/LLMBar/Natural/dataset.json", ROOT / "metareward/data/llmbar_natural.json")
    print(f"{len(found)} folders -> {OUT}")


def check(src: Path) -> int:
    from metareward.evals import llmbar

    found = folders(src, "Dataset/**")
    bad = [f for f in found if llmbar.statistics(llmbar.read_results(str(f / "result.json")))
           != _load(f / "statistics.json")]
    print(json.dumps({"folders": len(found), "matched": len(found) - len(bad),
                      "mismatched": [str(f.relative_to(src)) for f in bad]}))
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("llmbar", type=Path, help="An LLMBar checkout (its work tree)")
    ap.add_argument("--check", action="store_true", help="Score every evaluators/ folder; write nothing")
    args = ap.parse_args()
    if args.check:
        return check(args.llmbar)
    write(args.llmbar)
    return 0


if __name__ == "__main__":
    sys.exit(main())
