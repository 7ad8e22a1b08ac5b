from metareward.config import load_config
from metareward.stages import stage_key


def test_stage_keys_follow_what_each_stage_reads():
    """meta_judge.l2 is read when building pairs, so it re-keys `pairs` but not the costly `meta_judge` stage."""
    a, b = load_config("smoke"), load_config("smoke", ["meta_judge.l2=0.5"])
    inputs = {"model": "m", "responses": "r", "judgments": "j"}
    assert stage_key("meta_judge", a, 1, inputs) == stage_key("meta_judge", b, 1, inputs)
    assert stage_key("pairs", a, 1, inputs) != stage_key("pairs", b, 1, inputs)
    c = load_config("smoke", ["meta_judge.strip_score=true"])
    assert stage_key("meta_judge", a, 1, inputs) != stage_key("meta_judge", c, 1, inputs)
