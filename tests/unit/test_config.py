import pytest

from metareward.config import ConfigError, RunConfig, load_config, recipe_names, schedule


def test_every_shipped_recipe_loads():
    assert {"smoke", "llama3-8b"} <= set(recipe_names())
    for name in recipe_names():
        assert isinstance(load_config(name), RunConfig)


def test_llama3_recipe_has_the_papers_settings():
    cfg = load_config("llama3-8b")
    assert (cfg.actor.k, cfg.judge.n) == (7, 11)
    assert (cfg.actor.sampling.temperature, cfg.actor.sampling.top_p) == (0.8, 0.95)
    assert [cfg.at(t).rho for t in (1, 2, 3, 4)] == [0.0, 0.32, 0.32, 0.4]
    assert [cfg.at(t).judge_pairs for t in (1, 2, 3, 4)] == [True, True, False, False]
    assert [cfg.at(t).judge_max_chosen_chars for t in (1, 2)] == [1100, 1000]
    assert (cfg.dpo.beta, cfg.dpo.learning_rate, cfg.dpo.lr_scheduler_type) == (0.1, 5e-6, "cosine")
    assert cfg.dpo.global_batch_size == 32 and cfg.dpo.accumulation_steps(8) == 4  # 32 / (1 x 8 GPUs)


def test_schedule_repeats_last_value():
    assert [schedule([0.0, 0.32], t) for t in (1, 2, 3, 7)] == [0.0, 0.32, 0.32, 0.32]
    with pytest.raises(ValueError):
        schedule([1], 0)


def test_an_iteration_sees_its_own_schedule_values():
    cfg = load_config("smoke", ["pairs.rho=[0.0, 0.3]", "pairs.judge_pairs=[true, false]", "run.iterations=3"])
    assert cfg.at(2).schedules() == {"pairs.rho": 0.3, "pairs.actor_max_chosen_chars": 2500,
                                     "pairs.judge_pairs": False, "pairs.judge_max_chosen_chars": 1100}
    with pytest.raises(ValueError, match="pairs.rho: iteration 0 has no schedule value"):
        cfg.at(0).rho
    # iteration 2 and 3 use the same values, so their digests agree; iteration 1 differs; other sections don't care
    assert cfg.at(2).digest("pairs") == cfg.at(3).digest("pairs") != cfg.at(1).digest("pairs")
    assert cfg.at(1).digest("dpo") == cfg.at(2).digest("dpo") == cfg.digest("dpo")
    assert cfg.at(0).digest("pairs") == cfg.digest("pairs")  # the seed-model stages see the lists as they are
    longer = load_config("smoke", ["pairs.rho=[0.0, 0.3, 0.3]", "pairs.judge_pairs=[true, false]"])
    assert longer.at(2).digest("pairs") == cfg.at(2).digest("pairs")  # a longer list with the same value at t


def test_overrides_are_parsed_as_yaml():
    cfg = load_config("smoke", ["dpo.beta=0.2", "pairs.rho=[0.1, 0.3]", "model.path=null", "actor.k=6",
                                "judge.scoring=parse"])
    assert cfg.dpo.beta == 0.2 and cfg.pairs.rho == [0.1, 0.3] and cfg.model.path is None and cfg.actor.k == 6
    assert cfg.judge.scoring == "parse"


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("dpo.betta=0.2", "dpo.betta: unknown key; did you mean 'beta'?"),
        ("dpo.beta=-1", "dpo.beta: Input should be greater than 0"),
        ("pairs.rho=[0.5, 1.5]", "pairs.rho: Value error, every rho must lie in [0, 1]"),
        ("actor.k=1", "actor.k: Input should be greater than or equal to 2"),
        ("judge.n=1", "judge.n must be >= 2 when the meta-judge runs"),
        ("run.name=../evil", "run.name: Value error"),
        ("dpo.beta", "expected key=value"),
        ("meta_judge.scoring=parse", "meta_judge.sampling.max_new_tokens=0 needs meta_judge.scoring=expected"),
        ("dpo.bf16=sometimes", "dpo.bf16"),
        ("engine.dtype=bf16", "engine.dtype"),
    ],
)
def test_bad_values_name_the_field(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config("smoke", [override])
    assert fragment in str(e.value)


def test_unknown_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; shipped recipes: .*smoke"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+ malformed YAML"):
        load_config(str(bad))


def test_section_digests_isolate_concerns():
    """Changing dpo.beta changes the dpo digest only: that is why a beta override re-keys only training."""
    a, b = load_config("smoke"), load_config("smoke", ["dpo.beta=0.2"])
    assert a.digest("dpo") != b.digest("dpo")
    for section in ("actor", "judge", "meta_judge", "pairs", "engine", "prompts"):
        assert a.digest(section) == b.digest(section)


def test_digest_of_dotted_fields():
    """The meta-judge stage keys on its sampling/scoring fields, not on l2, which only the pairs stage reads."""
    a, b = load_config("smoke"), load_config("smoke", ["meta_judge.l2=0.5"])
    assert a.digest("meta_judge") != b.digest("meta_judge")
    assert a.digest("meta_judge.sampling", "meta_judge.scoring") == b.digest("meta_judge.sampling", "meta_judge.scoring")
