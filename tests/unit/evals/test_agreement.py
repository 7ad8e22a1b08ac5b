"""Judge quality: agreement with and without ties, swap consistency, Spearman/Kendall, the human importer."""

import json
import math

import pytest

from metareward.evals import agreement
from metareward.evals.io import EvalFileError

LABELS = {"1": "a", "2": "b", "3": "tie", "4": "a", "5": "b"}
VERDICTS = {"1": "a", "2": "a", "3": "tie", "4": "tie", "5": "b", "6": "a"}   # 6 has no label: ignored


def test_agreement_with_and_without_ties():
    r = agreement.agreement(LABELS, VERDICTS)
    # common ids 1-5; equal on 1, 3, 5 -> 3/5
    assert r["agreement"] == pytest.approx(0.6) and r["n"] == 5 and r["n_missing"] == 0
    # without ties: 3 (both tie) and 4 (verdict tie) left out; 1 and 5 agree, 2 does not -> 2/3
    assert r["agreement_without_ties"] == pytest.approx(2 / 3) and r["n_ties"] == 2


def test_swap_consistency():
    v = {"1": {"verdict": "a", "verdict_swapped": "b"},      # same response both times
         "2": {"verdict": "a", "verdict_swapped": "a"},      # position A won both times: inconsistent
         "3": {"verdict": "tie", "verdict_swapped": "tie"},
         "4": {"verdict": "b", "verdict_swapped": None}}     # judged once: not counted
    assert agreement.swap_consistency(v) == {"swap_consistency": pytest.approx(2 / 3), "n_swapped": 3}


def test_rank_correlations_by_hand():
    x, y = [1, 2, 3, 4, 5], [5, 6, 7, 8, 7]
    # ranks of y: 1, 2, 3.5, 5, 3.5; centred x: -2..2, centred y: -2, -1, .5, 2, .5
    # sum dx dy = 4 + 1 + 0 + 2 + 1 = 8; sum dx^2 = 10; sum dy^2 = 9.5 -> rho = 8 / sqrt(95)
    assert agreement.spearman(x, y) == pytest.approx(8 / math.sqrt(95))
    # 10 pairs: 8 concordant, 1 discordant (8 > 7), 1 tied in y -> tau_b = 7 / sqrt(10 * 9)
    assert agreement.kendall_tau_b(x, y) == pytest.approx(7 / math.sqrt(90))
    assert math.isnan(agreement.spearman([1, 1, 1], [1, 2, 3]))


def test_correlations_use_score_margins_against_labels():
    v = {"1": {"verdict": "a", "score_a": 5, "score_b": 3}, "2": {"verdict": "b", "score_a": 1, "score_b": 4},
         "3": {"verdict": "tie", "score_a": 2, "score_b": 2}, "4": {"verdict": "a"}}
    # margins 2, -3, 0 against labels +1 (a), -1 (b), 0 (tie): the same order -> both correlations 1
    r = agreement.correlations(LABELS, v)
    assert r == {"spearman": pytest.approx(1.0), "kendall_tau": pytest.approx(1.0), "n_scored": 3}
    assert agreement.verdict_from_scores(4.2, 4.0, tie_margin=0.25) == "tie"
    assert agreement.verdict_from_scores(4.5, 4.0, tie_margin=0.25) == "a"


def test_files_and_errors(tmp_path):
    lab = tmp_path / "labels.jsonl"
    lab.write_text('{"id": "1", "prompt": "p", "response_a": "x", "response_b": "y", "label": "A"}\n'
                   '{"id": 2, "label": "tie"}\n')
    assert agreement.read_labels(str(lab)) == {"1": "a", "2": "tie"}
    ver = tmp_path / "verdicts.jsonl"
    ver.write_text('{"id": "1", "verdict": "a"}\n{"id": "1", "verdict": "b"}\n')
    with pytest.raises(EvalFileError, match=r"verdicts.jsonl: line 2: duplicate id '1' \(first on line 1\)"):
        agreement.read_verdicts(str(ver))
    ver.write_text('{"id": "1", "verdict": "left"}\n')
    with pytest.raises(EvalFileError, match=r"line 1: verdict must be 'a', 'b' or 'tie', got 'left'"):
        agreement.read_verdicts(str(ver))


def test_import_mt_bench_human(tmp_path):
    conv = lambda ans: [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": ans + "1"},  # noqa: E731
                        {"role": "user", "content": "Q2"}, {"role": "assistant", "content": ans + "2"}]
    votes = [{"question_id": 81, "model_a": "alpaca-13b", "model_b": "gpt-4", "winner": "model_b",
              "judge": "expert_0", "conversation_a": conv("A"), "conversation_b": conv("B"), "turn": 1},
             {"question_id": 81, "model_a": "alpaca-13b", "model_b": "gpt-4", "winner": "tie (bothbad)",
              "judge": "expert_0", "conversation_a": conv("A"), "conversation_b": conv("B"), "turn": 2}]
    src = tmp_path / "human_judgments.json"
    src.write_text(json.dumps(votes))
    rows = agreement.import_mt_bench_human(str(src))
    assert rows[0] == {"id": "81-alpaca-13b-gpt-4-t1-expert_0", "prompt": "Q1", "response_a": "A1",
                       "response_b": "B1", "label": "b"}
    assert rows[1]["label"] == "tie" and rows[1]["response_a"] == "A2"
    assert rows[1]["prompt"] == "User: Q1\nAssistant: A1\n\nUser: Q2"
    votes[0]["winner"] = "nobody"
    src.write_text(json.dumps(votes))
    with pytest.raises(EvalFileError, match=r"human_judgments.json: entry 1: winner must be"):
        agreement.import_mt_bench_human(str(src))


def test_doctests():
    import doctest

    from metareward.evals import agreement

    result = doctest.testmod(agreement)
    assert result.attempted > 0 and result.failed == 0
