"""The drift guard's part of the benchmark stage (metareward/pipeline/drift_guard.py): an OpenAI-compatible reference
judge (a tiny HTTP server here, never the internet), the figures and per-prompt rows, the gate's record and stop."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from metareward.config import load_config
from metareward.evals.judges import JudgeCache
from metareward.pipeline import drift_guard
from metareward.pipeline.contract import Output, StageError
from metareward.records import Judgment, ModelRef, Response


@pytest.fixture
def endpoint():
    """/chat/completions that scores the judge prompt's response by its length: 'Score: 4' past 20 characters, else
    'Score: 1'; records every request."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            response = re.search(r"<response>(.*)</response>", body["messages"][-1]["content"], re.S).group(1)
            data = json.dumps({"choices": [{"message": {"content": f"Fine.\nScore: {4 if len(response) > 20 else 1}"}}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data.encode())

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", seen
    httpd.shutdown()


def _responses(texts: dict[str, str], suffix: str) -> list[Response]:
    return [Response(id=f"{p}-{suffix}", prompt_id=p, prompt="Say something.", text=t) for p, t in texts.items()]


PREV = {"p1": "short", "p2": "a rather long answer indeed"}
CUR = {"p1": "a much longer answer than before", "p2": "tiny"}


def test_an_openai_reference_judge_reads_score_n_and_is_cached(endpoint, tmp_path, monkeypatch):
    url, seen = endpoint
    monkeypatch.setenv("REF_KEY", "sk-test")
    cfg = load_config("smoke", [f"storage.root={tmp_path}", "health.drift.reference_judge.kind=openai",
                                "health.drift.reference_judge.model=judge-model",
                                f"health.drift.reference_judge.base_url={url}",
                                "health.drift.reference_judge.api_key_env=REF_KEY"])
    cache = JudgeCache(str(tmp_path / "cache"))
    ask = drift_guard.reference(cfg, seed_model=None, pool=None, cache=cache)
    scores, name = ask(_responses(PREV, "prev"))
    assert scores == {"p1": 1.0, "p2": 4.0} and name == f"openai:judge-model@{url}"
    assert len(seen) == 2 and seen[0]["model"] == "judge-model" and seen[0]["temperature"] == 0.0
    again = drift_guard.reference(cfg, None, None, cache)(_responses(PREV, "prev"))
    assert again == (scores, name) and len(seen) == 2  # the same requests are the cache's


def test_measure_writes_the_figures_and_one_row_per_prompt(tmp_path):
    """Own judge (M_1): prev (2, 3), cur (4, 1); reference: by length (1 or 4) as the endpoint above: prev (1, 4),
    cur (4, 1). Own prefers cur on p1 only (0.5), the reference too (0.5): excess 0."""
    cfg = load_config("smoke", [f"storage.root={tmp_path}"])
    own_prev = [Judgment(id="a", response_id="p1-prev", prompt_id="p1", text="", score=2.0),
                Judgment(id="b", response_id="p2-prev", prompt_id="p2", text="", score=3.0)]
    own_cur = [Judgment(id="c", response_id="p1-eval", prompt_id="p1", text="", score=4.0),
               Judgment(id="d", response_id="p2-eval", prompt_id="p2", text="", score=1.0)]

    def ref(responses):
        return {r.prompt_id: 4.0 if len(r.text) > 20 else 1.0 for r in responses}, "ref"

    res = Output()
    drift_guard.measure(cfg, ModelRef(uri="m1", digest="d1", iteration=1), str(tmp_path), _responses(PREV, "prev"),
                        _responses(CUR, "eval"), own_prev, own_cur, ref, res)
    d = res.stats["drift"]
    assert (d["own_prev"], d["own_cur"], d["ref_prev"], d["ref_cur"]) == (2.5, 2.5, 2.5, 2.5)
    assert (d["self_preference"], d["ref_preference"], d["self_preference_excess"]) == (0.5, 0.5, 0.0)
    assert (d["own_judge"], d["answers"], d["reference_judge"]) == ("M_1", "M_0 vs M_1", "ref")
    rows = [json.loads(line) for line in Path(res.files["drift"]).read_text().splitlines()]
    assert rows[0] == {"prompt_id": "p1", "prev_chars": 5, "cur_chars": 32, "own_prev": 2.0, "own_cur": 4.0,
                       "ref_prev": 1.0, "ref_cur": 4.0}


def test_record_then_stop(tmp_path):
    """A history whose last excess has a low end of 0.5: recorded in health.json, then the run stopped with one line
    naming the gate; with the drift guard off nothing is recorded."""
    cfg = load_config("smoke", [f"storage.root={tmp_path}", "run.name=r"])
    m = {"own_change": 0.1, "ref_change": 0.1, "self_preference": 1.0, "ref_preference": 0.25,
         "self_preference_excess": 0.75, "self_preference_excess_ci95": {"lo": 0.5, "hi": 1.0}}
    failed = drift_guard.record(cfg, 1, [m])
    health = json.loads((tmp_path / "r" / "iter_1" / "health.json").read_text())["drift"]
    assert health["passed"] is False and health["failed"] == failed and health["history"] == [m]
    with pytest.raises(StageError, match=r"^benchmark iter 1: drift gate failed: health.drift.max_self_preference"):
        drift_guard.stop(cfg, 1, failed)
    drift_guard.stop(cfg, 1, [])  # nothing failed: nothing raised
    off = load_config("smoke", [f"storage.root={tmp_path / 'off'}", "run.name=r", "health.drift.enabled=false"])
    assert drift_guard.record(off, 1, [m]) == [] and not (tmp_path / "off").exists()
