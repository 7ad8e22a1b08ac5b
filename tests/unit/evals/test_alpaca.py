"""AlpacaEval: get_winrate's numbers, the annotator's preference, LC (official plumbing and the labelled
approximation) and the alpaca_eval file formats."""

import json
import math
import sys
import types

import pytest

from metareward.evals import alpaca
from metareward.evals.io import EvalFileError


def test_get_winrate_worked_example():
    """prefs 2, 2, 1, 1.5, 0 (legacy draw), None (failed), 1.75.

    0 -> 1.5; None dropped; draws = two 1.5s. p - 1 = [1, 1, 0, .5, .5, .75]: mean 3.75/6 = .625.
    Deviations .375, .375, -.625, -.125, -.125, .125; squares sum .71875; sample variance .71875/5 = .14375;
    sem = sqrt(.14375/6) = .154785.
    """
    r = alpaca.get_winrate([2, 2, 1, 1.5, 0, None, 1.75])
    assert r["win_rate"] == pytest.approx(62.5)
    assert r["standard_error"] == pytest.approx(100 * math.sqrt(0.14375 / 6))
    assert (r["n_wins"], r["n_wins_base"], r["n_draws"], r["n_total"]) == (3, 1, 2, 6)
    # discrete: 1.75 rounds to 2, draws stay half: [1, 1, 0, .5, .5, 1] -> 4/6
    assert r["discrete_win_rate"] == pytest.approx(400 / 6)


def test_preference_from_probabilities_and_swap():
    # P(m) = .25 (output_1 named m): preference = 2 - .25 = 1.75, leaning to output_2
    assert alpaca.preference_from_probs(0.25) == 1.75
    assert math.isnan(alpaca.preference_from_probs(None))
    # shown swapped, 1.75 favours the first-listed original output_2's rival: 3 - 1.75 = 1.25
    assert alpaca.unswap(1.75) == 1.25
    system, user = alpaca.render("Say hi", "REF", "MODEL")
    assert system.startswith("You are a highly efficient assistant")
    assert '"instruction": """Say hi"""' in user and user.index("REF") < user.index("MODEL")
    assert user.endswith("m or M.\n\n## Best Model Identifier")


def _ann(pref, out1="x" * 10, out2="y" * 20):
    return alpaca.annotation_row("i", out1, "gpt4_turbo", out2, "mine", "ann", pref)


def test_evaluate_without_glm_files_is_labelled_approximate():
    rows = [_ann(2.0, "a" * 10, "b" * 30), _ann(1.0, "a" * 30, "b" * 10), _ann(1.5, "a" * 20, "b" * 20)]
    r = alpaca.evaluate(rows)
    assert "lc_win_rate" not in r and "approximation" in r["lc_note"]
    # one win, one loss, one draw, each balanced in length: the fit's intercept is 0, so LC = 50
    assert r["lc_win_rate_approx"] == pytest.approx(50.0, abs=1e-6)
    assert r["win_rate"] == pytest.approx(50.0) and r["avg_length"] == 20   # (30 + 10 + 20) / 3


def test_official_glm_gets_local_files(monkeypatch):
    """With alpaca_eval importable, its own GLM runs and its hub downloads are served from the given paths."""
    seen = []
    mod = types.ModuleType("alpaca_eval.metrics.glm_winrate")
    mod.hf_hub_download = lambda **kw: pytest.fail("must not download")

    def get_lc(df, save_weights_dir, is_add_glm_preference_inplace):
        seen.append(mod.hf_hub_download(repo_id="tatsu-lab/alpaca_eval", filename="df_gamed.csv"))
        seen.append(mod.hf_hub_download(repo_id="tatsu-lab/alpaca_eval", filename="instruction_difficulty.csv"))
        return {"length_controlled_winrate": 41.5, "win_rate": 40.0}

    mod.get_length_controlled_winrate = get_lc
    monkeypatch.setitem(sys.modules, "alpaca_eval.metrics.glm_winrate", mod)
    r = alpaca.evaluate([_ann(2.0), _ann(1.0)], "/data/difficulty.csv", "/data/gamed.csv")
    assert r["lc_win_rate"] == 41.5 and "lc_note" not in r
    assert seen == ["/data/gamed.csv", "/data/difficulty.csv"]


def test_alpaca_eval_files_round_trip(tmp_path):
    ann = tmp_path / "annotations.json"
    ann.write_text(json.dumps([
        {"instruction": "I1", "output_1": "ref", "generator_1": "gpt4_1106_preview", "dataset": "helpful_base",
         "output_2": "mine", "generator_2": "my-model", "annotator": "weighted_alpaca_eval_gpt4_turbo",
         "preference": 1.8, "price_per_example": 0.01, "time_per_example": 0.5, "raw_completion": None},
        {"instruction": "I2", "output_1": "ref", "generator_1": "gpt4_1106_preview", "dataset": "helpful_base",
         "output_2": "mine", "generator_2": "my-model", "annotator": "weighted_alpaca_eval_gpt4_turbo",
         "preference": None}]))
    rows = alpaca.read_annotations(str(ann))
    assert alpaca.get_winrate([r["preference"] for r in rows])["win_rate"] == pytest.approx(80.0)
    alpaca.write_annotations(str(tmp_path / "ours.json"), [_ann(1.25)])
    again = alpaca.read_annotations(str(tmp_path / "ours.json"))
    assert again[0]["preference"] == 1.25 and set(rows[0]) >= set(again[0]) - {"raw_completion"}

    alpaca.write_outputs(str(tmp_path / "model_outputs.json"), ["I1"], ["O1"], "my-model", "helpful_base")
    assert json.loads((tmp_path / "model_outputs.json").read_text()) == [
        {"instruction": "I1", "output": "O1", "generator": "my-model", "dataset": "helpful_base"}]
    assert alpaca.read_outputs(str(tmp_path / "model_outputs.json"))[0]["output"] == "O1"


def test_bad_annotation_names_entry(tmp_path):
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps([{"instruction": "i", "output_1": "a", "output_2": "b", "preference": "2"}]))
    with pytest.raises(EvalFileError, match=r"a.json: entry 1: field 'preference' must be a number or null"):
        alpaca.read_annotations(str(ann))


def test_doctests():
    import doctest

    from metareward.evals import alpaca

    result = doctest.testmod(alpaca)
    assert result.attempted > 0 and result.failed == 0
