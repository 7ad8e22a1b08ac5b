import json

import pytest

from metareward.inputs import eft
from metareward.method.prompts import render_judge


def _msg(mid, role, text, rank=None, replies=(), **extra):
    return {"message_id": mid, "role": role, "text": text, "rank": rank, "replies": list(replies), **extra}


TREE = {"message_tree_id": "t1", "tree_state": "ready_for_export", "prompt": _msg(
    "m1", "prompter", "What is the capital of Canada?", lang="en", replies=[
        _msg("m3", "assistant", "Ottawa.", rank=1),
        _msg("m2", "assistant", "The capital of Canada is Ottawa, in Ontario.", rank=0,
             replies=[_msg("m5", "prompter", "Thanks!")]),  # later turns are not used
        _msg("m4", "assistant", "Canada is big.", rank=2),
        _msg("m6", "assistant", "Unranked reply.", rank=None),
    ])}
ONE_RANKED = {"message_tree_id": "t2", "prompt": _msg("n1", "prompter", "Hi?", lang="en", replies=[
    _msg("n2", "assistant", "Hello!", rank=0)])}
OTHER_LANG = {"message_tree_id": "t3", "prompt": _msg("k1", "prompter", "Hola?", lang="es", replies=[
    _msg("k2", "assistant", "Hola!", rank=0), _msg("k3", "assistant", "Buenas.", rank=1)])}


def _write(tmp_path, rows, name="trees.jsonl"):
    f = tmp_path / name
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(f)


def test_tree_becomes_a_ranked_group(tmp_path):
    groups, skipped, _ = eft.read_ranked_file(_write(tmp_path, [TREE, ONE_RANKED, OTHER_LANG]), lang="en")
    [g] = groups
    assert (g.id, g.prompt) == ("m1", "What is the capital of Canada?")
    assert [(r.id, r.rank) for r in g.replies] == [("m2", 0), ("m3", 1), ("m4", 2)]  # sorted best first
    assert skipped == {"replies_unranked": 1, "groups_fewer_than_2_ranked": 1, "groups_other_lang": 1}


def test_flat_messages_give_the_same_group(tmp_path):
    """The OpenAssistant/oasst1 dataset rows: one message per line, linked by parent_id."""
    flat = [{"message_id": "m1", "parent_id": None, "role": "prompter", "text": "What is the capital of Canada?"},
            {"message_id": "m3", "parent_id": "m1", "role": "assistant", "text": "Ottawa.", "rank": 1},
            {"message_id": "m2", "parent_id": "m1", "role": "assistant",
             "text": "The capital of Canada is Ottawa, in Ontario.", "rank": 0},
            {"message_id": "m5", "parent_id": "m2", "role": "prompter", "text": "Thanks!"},
            {"message_id": "m4", "parent_id": "m1", "role": "assistant", "text": "Canada is big.", "rank": 2}]
    from_flat, _, _ = eft.read_ranked_file(_write(tmp_path, flat, "flat.jsonl"))
    from_tree, _, _ = eft.read_ranked_file(_write(tmp_path, [TREE]))
    assert from_flat == from_tree


def test_tree_turned_into_the_expected_eft_rows(tmp_path):
    """Ranks 0, 1, 2 with top score 5 -> scores 5, 4, 3; each row is the judge prompt for (prompt, reply) and
    a judgment ending in its score."""
    groups, _, _ = eft.read_ranked_file(_write(tmp_path, [TREE]))
    rows = eft.rubric_examples(groups, top_score=5)
    assert [(r.reply_id, r.rank, r.score) for r in rows] == [("m2", 0, 5), ("m3", 1, 4), ("m4", 2, 3)]
    assert rows[1].prompt == render_judge("What is the capital of Canada?", "Ottawa.")
    assert rows[1].completion.endswith("\nScore: 4")
    assert rows[1].completion.count(". ") >= 3  # four criteria stated
    sft = eft.sft_rows(rows[:1])
    assert sft == [{"prompt": [{"role": "user", "content": rows[0].prompt}],
                    "completion": [{"role": "assistant", "content": rows[0].completion}]}]


def test_rank_scores_stop_at_zero():
    g = eft.RankedGroup(id="g", prompt="q", replies=[eft.RankedReply(id=f"r{i}", text="a", rank=i) for i in range(4)])
    assert eft.rank_scores(g, top_score=2) == {"r0": 2, "r1": 1, "r2": 0}


def _group(*ranks):
    return eft.RankedGroup(id="g", prompt="q", replies=[eft.RankedReply(id=f"r{i}", text="a", rank=k)
                                                        for i, k in enumerate(ranks)])


def test_select_consistent_picks_the_lowest_feasible_scores():
    """Worst first: r2 (rank 2) takes its lowest score 2; r1 needs > 2 and takes 3 (not 5); r0 needs > 3:
    its 4. Had r1 taken 5, r0 (best score 4) would have had nothing left."""
    g = _group(0, 1, 2)
    cands = {"r0": [(4, "j04"), (2, "j02")], "r1": [(5, "j15"), (3, "j13")], "r2": [(2, "j22"), (None, "bad")]}
    assert eft.select_consistent(g, cands) == {"r2": (2, "j22"), "r1": (3, "j13"), "r0": (4, "j04")}
    cands["r0"] = [(3, "j03")]
    assert eft.select_consistent(g, cands) is None
    rows, dropped = eft.generated_examples([g], cands)
    assert rows == [] and dropped == 1


def test_downsample_the_most_common_score():
    """Scores 4,4,4,4,5,5,3: 4 is most common (4 rows), 5 second (2 rows) -> keep 2 of the four 4s."""
    rows = [eft.EFTExample(group_id="g", reply_id=f"r{i}", rank=0, score=s, prompt="p", completion="c")
            for i, s in enumerate([4, 4, 4, 4, 5, 5, 3])]
    kept, dropped = eft.downsample_most_common(rows, seed=0)
    assert dropped == 2 and sorted(r.score for r in kept) == [3, 4, 4, 5, 5]
    assert kept == eft.downsample_most_common(rows, seed=0)[0]  # seeded
    assert eft.downsample_most_common(rows[:3], seed=0) == (rows[:3], 0)  # one score only: unchanged


def test_pairwise_agreement_worked_by_hand():
    """Group A ranks r0 > r1 > r2 with judge scores 4, 4, 2: (r0,r1) tie, (r0,r2) agree, (r1,r2) agree.
    Group B ranks s0 > s1 with scores 1, 3: disagree. 4 pairs, 2 agree, 1 tie -> 0.5 and 2/3 without ties."""
    a = _group(0, 1, 2)
    b = eft.RankedGroup(id="b", prompt="q", replies=[eft.RankedReply(id="s0", text="a", rank=0),
                                                     eft.RankedReply(id="s1", text="b", rank=1)])
    out = eft.pairwise_agreement([a, b], {"r0": 4.0, "r1": 4.0, "r2": 2.0, "s0": 1.0, "s1": 3.0})
    assert out == {"pairs": 4, "agree": 2, "ties": 1, "agreement": 0.5, "agreement_without_ties": 0.6667}
    assert eft.pairwise_agreement([b], {"s0": 2.0})["ties"] == 1  # an unscored reply makes a tie


def test_split_holds_out_the_last_groups():
    groups = [_group(0, 1) for _ in range(6)]
    train, held = eft.split_groups(groups, 0.34)
    assert (len(train), len(held)) == (4, 2)
    assert eft.split_groups(groups, 0.0) == (groups, [])
    with pytest.raises(eft.RankedFileError):
        eft.split_groups(groups[:1], 0.5)


def test_shipped_ranked_set():
    groups, skipped, where = eft.read_ranked_file(None)
    assert len(groups) == 6 and all(len(g.replies) == 3 for g in groups) and skipped == {}


def test_bad_files_are_named(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps(TREE) + "\n{not json\n")
    with pytest.raises(eft.RankedFileError, match=r"bad.jsonl: line 2: invalid JSON"):
        eft.read_ranked_file(str(f))
    bad_rank = json.loads(json.dumps(TREE))
    bad_rank["prompt"]["replies"][0]["rank"] = "first"
    f.write_text(json.dumps(bad_rank) + "\n")
    with pytest.raises(eft.RankedFileError, match=r"line 1: reply m3: rank must be a non-negative integer"):
        eft.read_ranked_file(str(f))
    f.write_text(json.dumps({"prompt": {"message_id": "x", "role": "assistant", "text": "t"}}) + "\n")
    with pytest.raises(eft.RankedFileError, match=r"line 1: message x has role 'assistant', expected 'prompter'"):
        eft.read_ranked_file(str(f))
    f.write_text(json.dumps(ONE_RANKED) + "\n")
    with pytest.raises(eft.RankedFileError, match="no prompt with two or more ranked replies"):
        eft.read_ranked_file(str(f))
