from pathlib import Path

import pytest

from metareward import stages
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


def test_initial_model_is_the_eft_model_when_eft_is_on(tmp_path):
    from metareward import stages, store
    from metareward.config import load_config
    from metareward.records import Manifest

    cfg = load_config("smoke", [f"storage.root={tmp_path}", "eft.enabled=true"])
    with pytest.raises(stages.StageError, match="eft iter 0"):
        stages.initial_model(cfg)
    folder = store.stage_uri(cfg.storage.root, cfg.run.name, 0, "eft")
    store.write_manifest(Manifest(stage="eft", iteration=0, run=cfg.run.name, key="k", uri=folder,
                                  files={"model": f"{folder}/model"}))
    m0 = stages.initial_model(cfg)
    assert m0.uri == f"{folder}/model" and m0.iteration == 0


def test_health_check_names_a_judge_manifest_without_judgments(tmp_path):
    """A judge manifest with no judgments file gets an error naming the manifest, not a KeyError."""
    from metareward import stages, store
    from metareward.records import Manifest

    cfg = load_config("smoke", [f"storage.root={tmp_path}"])
    folder = store.stage_uri(cfg.storage.root, cfg.run.name, 1, "judge")
    m = Manifest(stage="judge", iteration=1, run=cfg.run.name, key="k", uri=folder, files={"model": folder})
    with pytest.raises(stages.StageError, match=r"judge iter 1: the manifest at .* lists no judgments file"):
        stages.check_health(cfg, 1, m)
    stages.check_health(load_config("smoke", [f"storage.root={tmp_path}", "health.enabled=false"]), 1, m)


def test_every_module_in_a_stage_key_exists():
    """A renamed module must not drop out of the keys silently (a missing file would count only its name)."""
    root = Path(stages.__file__).parent
    for stage, mods in stages.CODE.items():
        for mod in mods:
            assert (root / f"{mod}.py").is_file(), (stage, mod)


def test_a_change_in_the_decode_loop_rekeys_the_stages_that_generate(monkeypatch):
    before = {s: stages._code_digest(s) for s in stages.CODE}
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: real(self) + (b"#" if self.name == "decoding.py" else b""))
    changed = {s for s in stages.CODE if stages._code_digest(s) != before[s]}
    assert changed == {"prompt_pool", "eft", "generate", "judge", "meta_judge", "benchmark"}
