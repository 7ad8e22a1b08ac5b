"""LLMBar: the scorer against LLMBar's own statistics.json for every evaluator folder, its parse rule on the
completions LLMBar stored, the Vanilla prompt against its prompt file, our result.json rows, the file errors and
the CLI. Fixtures: tests/data/llmbar/ (README.md there says how bench/llmbar_fixtures.py made them)."""

import doctest
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metareward.cli import app
from metareward.evals import llmbar
from metareward.evals.io import EvalFileError

DATA = Path(__file__).resolve().parents[2] / "data" / "llmbar"
SETS = ("Natural", "Adversarial/Neighbor", "Adversarial/GPTInst", "Adversarial/GPTOut", "Adversarial/Manual")
FULL = sorted(p.parent for p in (DATA / "Dataset").glob("**/result.json"))


def _items(labels):
    return [{"input": f"i{k}", "output_1": f"a{k}", "output_2": f"b{k}", "label": y} for k, y in enumerate(labels)]


def _rows_from_codes(codes: str) -> list[dict]:
    """folders.json's '<label><winner swap=False><winner swap=True>' codes ('-' = null) as result.json rows."""
    def w(c):
        return None if c == "-" else c
    return [{"label": int(c[0]), "results": [{"swap = False": {"winner": w(c[1])}, "swap = True": {"winner": w(c[2])}}]}
            for c in codes.split()]


def test_module_docstring_examples():
    assert doctest.testmod(llmbar).failed == 0


def test_hand_worked_example():
    """Labels 1, 1, 2, 2; winners (as output_1/output_2) without swap 1, 1, 2, 1 and with swap 1, 2, 2, None.

    Right without swap: rows 1, 2, 3 (3 of 4); with swap: rows 1, 3 (2 of 4); accuracy (3 + 2) / 2 / 4 = 0.625.
    Same winner both orders: rows 1 and 3 -> agreement 2 / 4 = 0.5; both right: rows 1 and 3 -> 0.5.
    Kappas on evaluate.py's coding (winner "1" -> 1, "2" or None -> 0; labels stay 1, 2):
    - no swap: y1 = 1, 1, 0, 1 vs 1, 1, 2, 2. Column sums (labels 0, 1, 2) 0, 2, 2; row sums 1, 3, 0; expected
      off-diagonal mass (col_i * row_j / 4): (1,0) .5 + (2,0) .5 + (2,1) 1.5 = 2.5; observed off-diagonal 2
      ((0,2) and (1,2)): kappa = 1 - 2 / 2.5 = 0.2.
    - swap: y1 = 1, 0, 0, 0: row sums 3, 1, 0; expected off-diagonal (1,0) 1.5 + (2,0) 1.5 + (2,1) .5 = 3.5;
      observed 3: kappa = 1 - 3 / 3.5 = 1/7; average (0.2 + 1/7) / 2.
    - agreement: 1, 1, 0, 1 vs 1, 0, 0, 0: col sums 3, 1, row sums 1, 3: expected off-diagonal 9/4 + 1/4 = 2.5,
      observed 2: kappa 0.2.
    """
    rows = llmbar.result_rows(_items([1, 1, 2, 2]), [1, 1, 2, 1], [1, 2, 2, None])
    s = llmbar.score_results(rows)
    assert (s["accuracy"], s["agreement"], s["correct_both"], s["n"]) == (0.625, 0.5, 0.5, 4)
    assert (s["n_correct_noswap"], s["n_correct_swap"], s["n_correct_both"], s["n_agree"]) == (3, 2, 2, 2)
    assert (s["n_unparsed_noswap"], s["n_unparsed_swap"], s["verdicts"]) == (0, 1, "parsed")
    st = s["statistics"]
    assert st["correct_False"] == "3 / 4 = 75.0%" and st["correct_True"] == "2 / 4 = 50.0%"
    assert st["correct_average"] == "62.5%" and st["correct_both"] == "2 / 4 = 50.0%" and st["equal"] == "2 / 4 = 50.0%"
    assert st["kappa_False"] == pytest.approx(0.2) and st["kappa_True"] == pytest.approx(1 / 7)
    assert st["kappa_average"] == pytest.approx((0.2 + 1 / 7) / 2) and st["kappa_agreement"] == pytest.approx(0.2)
    assert (s["kappa_noswap"], s["kappa_swap"]) == (st["kappa_False"], st["kappa_True"])
    assert list(st) == ["correct_False", "correct_True", "correct_average", "correct_both", "equal",
                        "kappa_False", "kappa_True", "kappa_average", "kappa_agreement"]


def test_unparsed_is_wrong_and_two_unparsed_agree():
    """Label 1 twice. Row 1: unparsed both orders -> wrong twice, but evaluate.py counts None == None as equal.
    Row 2: 1 then unparsed -> right once, not equal. accuracy 1 / 4; agreement 1 / 2; correct_both 0."""
    s = llmbar.score_results(llmbar.result_rows(_items([1, 1]), [None, 1], [None, None]))
    assert (s["accuracy"], s["agreement"], s["correct_both"]) == (0.25, 0.5, 0.0)
    assert (s["n_unparsed_noswap"], s["n_unparsed_swap"]) == (1, 2)
    assert s["statistics"]["correct_average"] == "25.0%"


def test_kappa_undefined_is_nan_and_the_cli_prints_null(tmp_path):
    """A judge that always names output_2: both orders code as 0, 0 -> one class, 0 / 0 (numpy: NaN). Against
    labels 2, 2 the coding is 0 vs 2 twice: expected off-diagonal 2, observed 2, kappa 0 (though all right)."""
    rows = llmbar.result_rows(_items([2, 2]), [2, 2], [2, 2])
    s = llmbar.score_results(rows)
    assert s["accuracy"] == 1.0 and math.isnan(s["kappa_agreement"]) and s["kappa_noswap"] == 0.0
    (tmp_path / "result.json").write_text(json.dumps(rows))
    out = _cli("llmbar", "--results", str(tmp_path / "result.json"))
    assert out["kappa_agreement"] is None and out["statistics"]["kappa_agreement"] is None


def test_parity_with_llmbar_statistics_for_every_folder():
    """folders.json: all 325 Dataset/LLMBar/<set>/evaluators/<evaluator>/<prompt>/ folders of LLMBar (65 per set:
    Natural and the four Adversarial sets), each with its rows and statistics.json as stored. Every one must come
    out identical, kappas to the last bit, and our accuracy / agreement must be their correct_average / equal."""
    folders = json.loads((DATA / "folders.json").read_text())["folders"]
    assert len(folders) == 325
    for name in SETS:
        assert sum(k.startswith(f"Dataset/LLMBar/{name}/evaluators/") for k in folders) == 65, name
    for name, folder in folders.items():
        rows = _rows_from_codes(folder["rows"])
        expected = folder["statistics"]
        assert llmbar.statistics(rows) == expected, name
        s = llmbar.score_results(rows)
        assert f"{s['accuracy'] * 100}%" == expected["correct_average"], name
        assert expected["equal"].endswith(f" = {s['agreement'] * 100}%"), name
        assert expected["correct_both"] == f"{s['n_correct_both']} / {s['n']} = {s['correct_both'] * 100}%", name


@pytest.mark.parametrize("folder", FULL, ids=lambda p: "/".join(p.parts[-3:]))
def test_untouched_llmbar_files(folder):
    """Three result.json files as LLMBar wrote them (one, two and three results per row; unparsed winners; rating
    rows with score_1/score_2), read from disk and scored like their statistics.json."""
    rows = llmbar.read_results(str(folder / "result.json"))
    assert llmbar.statistics(rows) == json.loads((folder / "statistics.json").read_text())


def test_untouched_files_present():
    assert len(FULL) == 3


def test_parse_rule_cases():
    """evaluators/config/*/Vanilla*.json: "1": (?:^|\\n) ?Output \\(a\\), "2": (?:^|\\n) ?Output \\(b\\), tried in
    that order with re.search on the stripped completion; no match -> unparsed."""
    cases = {
        "Output (a)": 1, "Output (b)": 2, "  Output (b)\n": 2,             # stripped first
        "Sure.\n Output (b)": 2,                                           # at most one space after a newline
        "Sure.\n  Output (b)": None, "The better one is Output (a)": None,  # not at the start of a line
        "output (a)": None, "Output(a)": None, "Output (c)": None, "": None, "Output A": None,
        "Output (b) is better.\n\nOutput (a) lacks detail.": 1,             # (a) is tried first, anywhere on a line
        "Output (b) is better.\nOutput (b) is longer.": 2,
    }
    assert {text: llmbar.parse_verdict(text) for text in cases} == cases


def test_parse_rule_on_every_completion_llmbar_stored():
    """parse_cases.json: the 258 distinct completions of LLMBar's Vanilla* folders (its five sets) with the
    verdict on the shown order that LLMBar stored for them (the swap undone back)."""
    cases = json.loads((DATA / "parse_cases.json").read_text())
    assert len(cases) == 258 and {v for _, v in cases} == {1, 2, None}
    assert [llmbar.parse_verdict(text) for text, _ in cases] == [v for _, v in cases]


def test_winner_undoes_the_swap():
    assert [llmbar.winner(v, False) for v in (1, 2, None)] == [1, 2, None]
    assert [llmbar.winner(v, True) for v in (1, 2, None)] == [2, 1, None]
    # with output_2 shown first, "Output (a)" names output_2
    assert llmbar.winner(llmbar.parse_verdict("Output (a)"), swap=True) == 2
    with pytest.raises(ValueError, match="1, 2 or None"):
        llmbar.winner(3, True)


def test_vanilla_prompt_is_llmbars_file():
    """The constants are Vanilla.txt split as prompt_to_chatml does; the rendering of Natural entry 4 in both
    orders equals the one LLMBar's own prompt_to_chatml made (vanilla_rendering.json)."""
    text = (DATA / "LLMEvaluator/evaluators/prompts/comparison/Vanilla.txt").read_text()
    assert text == (f"<|im_start|>system\n{llmbar.VANILLA_SYSTEM}\n<|im_end|>\n"
                    f"<|im_start|>user\n{llmbar.VANILLA_USER}\n<|im_end|>")
    expected = json.loads((DATA / "vanilla_rendering.json").read_text())
    for swap in (False, True):
        assert llmbar.vanilla_prompt(expected["item"], swap) == expected[f"swap = {swap}"]
    user = llmbar.vanilla_prompt(expected["item"], True)[1]["content"]
    assert user.index(expected["item"]["output_2"]) < user.index(expected["item"]["output_1"])


def test_shipped_natural_set():
    items = llmbar.read_dataset(llmbar.natural_path())
    assert len(items) == 100 and {i["label"] for i in items} == {1, 2}
    assert items[3]["input"].startswith("Why does eating something crunchy sound so loud")
    assert llmbar.read_dataset(llmbar.natural_path(), limit=3) == items[:3]


def test_result_rows_are_llmbar_rows_and_probs_are_labelled():
    items = _items([1, 2])
    rows = llmbar.result_rows(items, [1, 2], ["2", None], completions_noswap=["Output (a)", "Output (b)"],
                              verdicts=llmbar.VERDICTS_PROBS)
    assert rows[0] == {**items[0], "results": [{"swap = False": {"completion": ["Output (a)", ""], "winner": "1"},
                                                "swap = True": {"completion": ["", ""], "winner": "2"},
                                                "verdicts": "probs"}]}
    assert llmbar.score_results(rows)["verdicts"] == "probs"
    parsed = llmbar.result_rows(items, [1, 2], [1, 2])
    assert llmbar.score_results(parsed[:1] + rows[1:])["verdicts"] == "mixed"
    with pytest.raises(ValueError, match="2 items but 2 and 1 winners"):
        llmbar.result_rows(items, [1, 2], [1])
    with pytest.raises(ValueError, match="a winner is 1, 2 or None, got 3"):
        llmbar.result_rows(items, [1, 3], [1, 2])


def test_probability_form():
    """Ours, not LLMBar's: the reply is forced to start "Output (", the next token a or b decides."""
    assert llmbar.choice_prefix() == "Output (" and llmbar.CHOICES == ("a", "b")
    assert [llmbar.parse_verdict(llmbar.choice_prefix() + c + ")") for c in llmbar.CHOICES] == [1, 2]
    assert llmbar.verdict_from_probs(0.7, 0.2) == 1 and llmbar.verdict_from_probs(0.1, 0.2) == 2
    assert llmbar.verdict_from_probs(0.3, 0.3) is None and llmbar.verdict_from_probs(None, 0.2) is None
    assert llmbar.verdict_from_probs(float("nan"), 0.2) is None


@pytest.mark.parametrize("rows, message", [
    ([{"results": []}], "entry 1: missing field 'label'"),
    ([{"label": 3, "results": []}], "entry 1: field 'label' must be 1 or 2, got 3"),
    ([{"label": "1", "results": []}], "entry 1: field 'label' must be 1 or 2, got '1'"),
    ([{"label": 1}], "entry 1: missing field 'results'"),
    ([{"label": 1, "results": []}], "entry 1: field 'results' must be a non-empty list"),
    ([{"label": 1, "results": [{"swap = False": {"winner": "1"}}]}],
     "entry 1: missing field results[-1]['swap = True']['winner']"),
    ([{"label": 1, "results": [{"swap = False": {"winner": "1"}, "swap = True": {"winner": 2}}]}],
     "entry 1: field results[-1]['swap = True']['winner'] must be \"1\", \"2\" or null, got 2"),
    ([], "no entries"),
    ({"label": 1}, "expected a JSON list of objects"),
])
def test_bad_result_files_name_file_entry_and_field(tmp_path, rows, message):
    path = tmp_path / "result.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(EvalFileError) as e:
        llmbar.read_results(str(path))
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


def test_bad_dataset_files_name_file_entry_and_field(tmp_path):
    path = tmp_path / "dataset.json"
    good = {"input": "i", "output_1": "a", "output_2": "b", "label": 1}
    path.write_text(json.dumps([good, {**good, "output_2": None}]))
    with pytest.raises(EvalFileError, match=r"dataset.json: entry 2: field 'output_2' must be str, got NoneType"):
        llmbar.read_dataset(str(path))
    assert llmbar.read_dataset(str(path), limit=1) == [good]
    path.write_text(json.dumps([good, {k: v for k, v in good.items() if k != "label"}]))
    with pytest.raises(EvalFileError, match=r"dataset.json: entry 2: missing field 'label'"):
        llmbar.read_dataset(str(path))
    with pytest.raises(EvalFileError, match="no such file"):
        llmbar.read_dataset(str(tmp_path / "missing.json"))


def test_scoring_rows_in_memory_names_the_entry():
    with pytest.raises(ValueError, match="entry 2: missing field 'label'"):
        llmbar.score_results(llmbar.result_rows(_items([1]), [1], [1]) + [{"results": []}])
    with pytest.raises(ValueError, match="no result rows"):
        llmbar.score_results([])


def _cli(*args):
    r = CliRunner().invoke(app, ["eval", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_cli_scores_an_llmbar_file():
    folder = DATA / "Dataset/LLMBar/Adversarial/GPTOut/evaluators/LLaMA2/Vanilla"
    out = _cli("llmbar", "--results", str(folder / "result.json"))
    assert out["statistics"] == json.loads((folder / "statistics.json").read_text())
    assert out["n"] == 47 and f"{out['accuracy'] * 100}%" == out["statistics"]["correct_average"]
    assert out["verdicts"] == "parsed"


def test_cli_error_is_one_line(tmp_path):
    bad = tmp_path / "result.json"
    bad.write_text(json.dumps([{"label": 1, "results": [{"swap = False": {"winner": "1"}}]}]))
    p = subprocess.run([sys.executable, "-m", "metareward", "eval", "llmbar", "--results", str(bad)],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip() == f"error: {bad}: entry 1: missing field results[-1]['swap = True']['winner']"
