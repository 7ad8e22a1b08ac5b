import pytest

from metareward.config import ConfigError, RunConfig, check_overrides, load_config, recipe_names, schedule


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


@pytest.mark.parametrize("override, fragment", [
    ("dpo.beta=inf", "dpo.beta: Input should be a finite number"),
    ("dpo.beta=.nan", "dpo.beta: Input should be a finite number"),
    ("actor.sampling.temperature=.inf", "actor.sampling.temperature: Input should be a finite number"),
    ("judge.sampling.temperature=-.inf", "judge.sampling.temperature: Input should be a finite number"),
    ("pairs.rho=[0.0, .nan]", "pairs.rho.1: Input should be a finite number"),
    ("pairs.judge_max_share=.nan", "pairs.judge_max_share: Input should be a finite number"),
    ("run.seed=4294967296", "run.seed: Input should be less than or equal to 4294967295"),
    ("run.seed=-1", "run.seed: Input should be greater than or equal to 0"),
])
def test_values_no_run_can_use_are_refused(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config("smoke", [override])
    assert fragment in str(e.value)


def test_the_seed_range_is_what_training_can_take():
    """Training seeds numpy's global generator (transformers' set_seed): 2**32 - 1 is its largest seed."""
    import numpy as np

    from metareward.config import SEED_MAX

    assert load_config("smoke", [f"run.seed={SEED_MAX}"]).run.seed == SEED_MAX
    np.random.seed(SEED_MAX)
    with pytest.raises(ValueError):
        np.random.seed(SEED_MAX + 1)


def test_empty_and_folder_recipes(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "comments.yaml").write_text("# dpo:\n#   beta: 0.2\n")
    for name in ("empty.yaml", "comments.yaml"):
        with pytest.raises(ConfigError, match=f"{name}: empty file \\(no settings\\)"):
            load_config(str(tmp_path / name))
    with pytest.raises(ConfigError, match="is a folder, expected a YAML config file"):
        load_config(str(tmp_path))


def test_a_key_given_twice_in_a_recipe_names_the_line(tmp_path):
    f = tmp_path / "my.yaml"
    f.write_text("run:\n  name: a\ndpo:\n  beta: 0.1\n  learning_rate: 1.0e-6\n\n  beta: 0.2\n")
    with pytest.raises(ConfigError, match=r"my.yaml line 7: dpo.beta given twice$"):
        load_config(str(f))
    f.write_text("dpo: {beta: 0.1}\nrun: {name: a}\ndpo: {beta: 0.2}\n")
    with pytest.raises(ConfigError, match=r"my.yaml line 3: dpo given twice$"):
        load_config(str(f))
    f.write_text("prompts:\n  decontam:\n    benchmarks: {a: x.jsonl, a: y.jsonl}\n")
    with pytest.raises(ConfigError, match=r"my.yaml line 3: prompts.decontam.benchmarks.a given twice$"):
        load_config(str(f))
    # a merge key (<<) is not a repeated key: the anchor's values, then the mapping's own
    f.write_text("judge:\n  sampling: &s {temperature: 0.5, top_p: 0.9}\nactor:\n  sampling:\n    <<: *s\n"
                 "    temperature: 0.7\n")
    cfg = load_config(str(f))
    assert (cfg.actor.sampling.temperature, cfg.actor.sampling.top_p, cfg.judge.sampling.temperature) == (0.7, 0.9, 0.5)


@pytest.mark.parametrize("overrides, fragment", [
    (["dpo.beta=0.1", "actor.k=3", "dpo.beta=0.2"], "override dpo.beta: given twice on the command line"),
    ([" dpo.beta=0.1", "dpo.beta =0.2"], "override dpo.beta: given twice"),
    (["dpo={beta: 0.1}", "dpo.beta=0.2"], "overrides dpo and dpo.beta overlap: give one of them"),
    (["dpo.beta=0.2", "dpo={beta: 0.1}"], "overrides dpo.beta and dpo overlap"),
    (["pairs.rho=[0.0,"], "override 'pairs.rho=[0.0,': malformed YAML value"),
])
def test_ambiguous_or_malformed_overrides(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        check_overrides(overrides)
        load_config("smoke", overrides)
    assert fragment in str(e.value)


def test_code_may_layer_overrides_the_command_line_may_not():
    """Tests and tools build a base list and add to it (the later wins); `metareward run` refuses the same."""
    assert load_config("smoke", ["dpo.beta=0.1", "dpo.beta=0.2"]).dpo.beta == 0.2
    with pytest.raises(ConfigError, match="override dpo.beta: given twice on the command line"):
        check_overrides(["dpo.beta=0.1", "dpo.beta=0.2"])


def test_sibling_and_nested_but_distinct_overrides_are_fine():
    overrides = ["eval.max_new_tokens=10", "eval.mt_bench.max_new_tokens=5", "actor.sampling.top_p=0.9",
                 "actor.sampling.temperature=0.5", "actor.k=5"]
    check_overrides(overrides)
    cfg = load_config("smoke", overrides)
    assert (cfg.eval.max_new_tokens, cfg.eval.mt_bench.max_new_tokens) == (10, 5)
    assert (cfg.actor.sampling.top_p, cfg.actor.sampling.temperature, cfg.actor.k) == (0.9, 0.5, 5)
