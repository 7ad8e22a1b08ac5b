"""The evaluator judges: an OpenAI-compatible endpoint (a tiny HTTP server in this test, never the internet),
a local engine, and the call cache that makes a rerun free."""

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from metareward.engines.fake import FakeEngine
from metareward.evals import alpaca, harness, mtbench
from metareward.evals.judges import CachedJudge, Chat, JudgeCache, JudgeError, LocalJudge, OpenAIJudge


@pytest.fixture
def server():
    """Answers /chat/completions; fails the first `fail` requests with HTTP 500; records every request."""
    state = {"requests": [], "fail": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["requests"].append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            if state["fail"] > 0:
                state["fail"] -= 1
                self.send_response(500)
                self.end_headers()
                self.wfile.write(b"busy")
                return
            if body.get("logprobs"):
                top = [{"token": "M", "logprob": -0.1}, {"token": "m", "logprob": -2.4},
                       {"token": "The", "logprob": -5.0}]
                choice = {"message": {"content": "M"}, "logprobs": {"content": [{"token": "M", "top_logprobs": top}]}}
            else:
                choice = {"message": {"content": "Clear and correct. Rating: [[7]]"}}
            data = json.dumps({"choices": [choice]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield state
    httpd.shutdown()


def test_openai_judge_generate_with_key_from_env(server, monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-secret")
    judge = OpenAIJudge("gpt-4", server["url"], "MY_JUDGE_KEY", retry_sleep_s=0)
    q = mtbench.Question(1, "writing", ["Write a haiku."])
    rows = harness.judge_mt_bench(judge, [q], {1: ["Leaves fall"]}, "mine", "parse", 2048)
    assert rows[0]["score"] == 7 and rows[0]["judge"] == [judge.identity, "single-v1"]
    req = server["requests"][0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-secret"
    assert req["body"]["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert req["body"]["temperature"] == 0.0 and req["body"]["max_tokens"] == 2048
    assert "sk-secret" not in judge.identity and judge.identity == f"openai:gpt-4@{server['url']}"


def test_openai_judge_alpaca_preference_from_logprobs(server):
    judge = OpenAIJudge("gpt-4-1106-preview", server["url"], None, retry_sleep_s=0)
    refs = [{"instruction": "Say hi", "output": "Hello!", "generator": "gpt4_turbo"}]
    swapped = alpaca.is_swapped("Say hi", 0)
    rows = harness.annotate_alpaca(judge, refs, ["Hi there"], "mine", seed=0)
    # P(m) = e^-2.4 / (e^-2.4 + e^-0.1) = 1 / (1 + e^2.3); shown order preference = 2 - P(m)
    p_m = 1 / (1 + math.exp(2.3))
    expected = (3 - (2 - p_m)) if swapped else (2 - p_m)
    assert rows[0]["preference"] == pytest.approx(expected)
    body = server["requests"][0]["body"]
    assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 5
    assert server["requests"][0]["auth"] is None   # no key variable: no header (a local vLLM server)


def test_retries_then_clear_error(server):
    server["fail"] = 1
    judge = OpenAIJudge("m", server["url"], None, max_retries=1, retry_sleep_s=0)
    assert judge.generate([Chat(None, "hi")], 5) == ["Clear and correct. Rating: [[7]]"]
    server["fail"] = 5
    with pytest.raises(JudgeError, match=r"openai:m@.*: HTTP 500: busy"):
        judge.generate([Chat(None, "hi")], 5)
    with pytest.raises(JudgeError, match="set the environment variable NOPE"):
        OpenAIJudge("gpt-4", "https://api.openai.com/v1", "NOPE").generate([Chat(None, "x")], 1)


def test_cache_makes_a_rerun_free(server, tmp_path):
    chats = [Chat("sys", "a"), Chat("sys", "b")]
    first = CachedJudge(OpenAIJudge("m", server["url"], None), JudgeCache(str(tmp_path / "cache")))
    out = first.generate(chats, 16)
    assert len(server["requests"]) == 2
    again = CachedJudge(OpenAIJudge("m", server["url"], None), JudgeCache(str(tmp_path / "cache")))
    assert again.generate(chats, 16) == out and len(server["requests"]) == 2   # read from the store
    assert (again.cache.hits, again.cache.misses) == (2, 0)
    again.generate(chats, 32)   # other parameters: a different call
    assert len(server["requests"]) == 4
    other = CachedJudge(OpenAIJudge("other", server["url"], None), JudgeCache(str(tmp_path / "cache")))
    other.generate(chats[:1], 16)   # another judge never reuses these answers
    assert len(server["requests"]) == 5


def test_local_expected_rating_splits_ten_from_one():
    """P(1..9) after 'Rating: [[' then P('0' vs ']]') after 'Rating: [[1'."""

    class Probe:
        identity, kind = "local:probe", "local"

        def choice_probs(self, chats, prefix, choices):
            if prefix.endswith("[[1"):
                return [[0.25, 0.75]] * len(chats)             # P(10 | "1") = .25
            return [[0.4, 0, 0, 0, 0, 0, 0, 0.6, 0]] * len(chats)  # P("1") = .4, P("8") = .6

    # ratings: 1 with .4 * .75 = .3, 10 with .4 * .25 = .1, 8 with .6 -> .3 + 1.0 + 4.8 = 6.1
    assert harness.expected_ratings(Probe(), [Chat(None, "x")]) == [6.1]


def test_local_judge_on_the_fake_engine_flattens_the_system_message():
    engine = FakeEngine()
    judge = LocalJudge(engine, "fake:M_0#abc")
    assert judge.identity == "local:fake:M_0#abc"
    probs = judge.choice_probs([Chat("sys", "user")], "", ["m", "M"])
    assert probs == engine.choice_probs(["sys\n\nuser"], [""], ["m", "M"])
