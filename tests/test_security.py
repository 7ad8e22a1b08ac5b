"""Security: nothing read from the store is unpickled, remote model code is off unless the config turns it on,
and secret environment values are masked in logs, manifests and reports."""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path

import pytest

from metareward.runstore import redact, store
from metareward.config import RunConfig, load_config, recipe_names
from metareward.records import Manifest

ROOT = Path(__file__).resolve().parents[1]
UNSAFE = re.compile(r"\bimport (c?pickle|dill|cloudpickle|joblib)\b|\bpickle\.loads?\(|\bjoblib\.load\(|"
                    r"\btorch\.load\((?![^)]*weights_only\s*=\s*True)")


def test_no_unpickling_anywhere_in_the_project():
    sources = [p for d in ("metareward", "tasks", "flows") for p in (ROOT / d).rglob("*.py")]
    assert len(sources) > 30
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in sources
                 for n, line in enumerate(p.read_text().splitlines(), 1) if UNSAFE.search(line)]
    assert offenders == []
    assert UNSAFE.search("x = torch.load(path)") and not UNSAFE.search("torch.load(path, weights_only=True)")


def test_prefect_results_are_json():
    from tasks.stages import COMMON

    assert COMMON["result_serializer"] == "json"


def test_trust_remote_code_is_off_unless_the_config_turns_it_on():
    assert RunConfig().model.trust_remote_code is False
    assert all(load_config(name).model.trust_remote_code is False for name in recipe_names())
    assert load_config("smoke", ["model.trust_remote_code=true"]).model.trust_remote_code is True
    from metareward.training import dpo, sft
    from metareward.engines import transformers_engine, vllm_engine

    for fn in (transformers_engine.TransformersEngine.__init__, vllm_engine.VLLMEngine.__init__, dpo.train_dpo,
               sft.train_sft):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False, fn


def test_open_engine_passes_the_config_setting(monkeypatch):
    from metareward import engines
    from metareward.engines import transformers_engine

    seen = {}
    monkeypatch.setattr(transformers_engine, "TransformersEngine", lambda path, **kw: seen.update(kw))
    cfg = load_config("smoke")
    engines.open_engine("transformers", "m", engine_cfg=cfg.engine, model_cfg=cfg.model)
    assert seen["trust_remote_code"] is False


ENV = {"OPENAI_API_KEY": "sk-live-0123456789", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG", "HF_TOKEN":
       "hf_abcdefghijkl", "PREFECT_API_KEY": "pnu_1234567890", "TOKENIZERS_PARALLELISM": "false",
       "MY_PASSWORD": "short", "HOME": "/root/somewhere", "AWS_ACCESS_KEY_ID": "metareward-bucket"}


def test_secret_names():
    assert [k for k in ENV if redact.is_secret_name(k)] == ["OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN",
                                                            "PREFECT_API_KEY", "MY_PASSWORD"]
    # MY_PASSWORD's value is under 8 characters: left alone, it would mask ordinary words
    assert redact.secret_values(ENV) == ["wJalrXUtnFEMI/K7MDENG", "sk-live-0123456789", "hf_abcdefghijkl",
                                         "pnu_1234567890"]
    assert redact.redact("Bearer sk-live-0123456789 at /root/somewhere", ENV) == "Bearer *** at /root/somewhere"


def test_logs_are_redacted(monkeypatch, caplog):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    redact.install()
    redact.install()  # idempotent
    log = logging.getLogger("metareward.test")
    with caplog.at_level(logging.INFO):
        log.info("calling %s with key %s", "https://api.openai.com/v1", ENV["OPENAI_API_KEY"])
        try:
            raise RuntimeError(f"401 for token {ENV['HF_TOKEN']}")
        except RuntimeError:
            log.exception("request failed")
    text = caplog.text
    assert "calling https://api.openai.com/v1 with key ***" in text and "401 for token ***" in text
    assert ENV["OPENAI_API_KEY"] not in text and ENV["HF_TOKEN"] not in text


def test_manifests_and_reports_are_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", ENV["OPENAI_API_KEY"])
    m = Manifest(stage="benchmark", iteration=1, run="r", key="k", uri=str(tmp_path / "s"), files={}, digests={},
                 counts={}, stats={"judge_error": f"401 Unauthorized (key {ENV['OPENAI_API_KEY']})"}, inputs={},
                 config_digest="c", versions={}, seed=0, duration_s=0.0, created="now")
    store.write_manifest(m)
    text = (tmp_path / "s" / "manifest.json").read_text()
    assert ENV["OPENAI_API_KEY"] not in text and "401 Unauthorized (key ***)" in text
    assert redact.redact_obj({"a": [ENV["OPENAI_API_KEY"], 1, None]}) == {"a": ["***", 1, None]}


@pytest.mark.parametrize("argv", [["run", "smoke", "model.path=/models/sk-live-0123456789"]])
def test_cli_error_line_is_redacted(argv, monkeypatch, capsys, tmp_path):
    import sys

    from flows.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", ENV["OPENAI_API_KEY"])
    monkeypatch.setattr(sys, "argv", ["metareward", *argv])
    with pytest.raises(SystemExit):
        main()
    err = capsys.readouterr().err
    assert err.strip() == "error: model.path /models/***: no such folder"
