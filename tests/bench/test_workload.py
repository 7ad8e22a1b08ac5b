"""bench/workload.py, the requests both engine sections run (bench.py's at the smoke size, scaling.py's bigger),
without the model: row counts worked out by hand, the meta-judge's pairs in both orders, the timing on a stand-in
engine; and bench/'s imports go one way (bench.py -> scaling.py -> workload.py)."""

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wl(bench_file):
    return bench_file("workload")


def _fake_workload(wl, prompts: int, k: int, n: int) -> dict[str, int]:
    """Rows of each stage built by the workload's own text builders, on fake completions."""
    texts = [f"question {i}?" for i in range(prompts)]
    responses = [[SimpleNamespace(text=f"answer {i}.{j}") for j in range(k)] for i in range(prompts)]
    answers = wl.answered(texts, responses)
    judge = wl.judge_texts(answers)
    judged = [[SimpleNamespace(text=f"judgment {i}.{j}") for j in range(n)] for i in range(len(judge))]
    meta = wl.meta_judge_texts(answers, judged, k)
    return {"generate": len(texts) * k, "judge": len(judge) * n, "meta_judge": len(meta)}


def test_the_workload_rows_at_k4_n3_and_doubled(wl):
    # 16 prompts x 4 = 64 responses; x 3 judgments = 192; 16 first responses x 3 x 2 ordered pairs = 96
    assert wl.requests(16, 4, 3) == {"generate": 64, "judge": 192, "meta_judge": 96}
    # doubled: 16 x 8 = 128; x 6 = 768; 16 x 6 x 5 = 480
    assert wl.requests(16, 8, 6) == {"generate": 128, "judge": 768, "meta_judge": 480}
    assert _fake_workload(wl, 16, 4, 3) == wl.requests(16, 4, 3)
    assert _fake_workload(wl, 16, 8, 6) == wl.requests(16, 8, 6)
    # the smoke size the engine section runs
    assert wl.requests(wl.N_PROMPTS, wl.K, wl.N_JUDGE) == {"generate": 64, "judge": 192, "meta_judge": 96}


def test_the_meta_judge_sees_the_first_response_with_both_orders(wl):
    answers = [("q0", "a0.0"), ("q0", "a0.1"), ("q1", "a1.0"), ("q1", "a1.1")]  # 2 prompts, K=2
    judged = [[SimpleNamespace(text=f"J{i}-{j}") for j in range(2)] for i in range(4)]
    meta = wl.meta_judge_texts(answers, judged, 2)
    assert len(meta) == 4  # 2 prompts x 1 pair x 2 orders
    assert "a0.0" in meta[0] and "a0.1" not in "".join(meta)
    assert meta[0].index("J0-0") < meta[0].index("J0-1") and meta[1].index("J0-1") < meta[1].index("J0-0")
    assert "a1.0" in meta[2] and "J2-0" in meta[2]


def test_the_prompts_sampling_and_recipe_are_the_smoke_runs(wl):
    prompts = wl.smoke_prompts()
    assert len(prompts) >= wl.N_PROMPTS and prompts[0] == "Explain why the sky looks blue during the day."
    s = wl.sampling(wl.JUDGE_TOKENS)
    assert (s.temperature, s.top_p, s.max_new_tokens) == (0.8, 0.95, 64)  # the paper's sampling
    assert wl.recipe().run.name == "smoke"
    assert wl.MAX_TOKENS == {"generate": 96, "judge": 64, "meta_judge": 64}


def test_timed_generate_counts_every_sample_of_every_text(wl):
    class Engine:
        def generate(self, texts, n, sampling, seed):
            assert seed == 0
            return [[SimpleNamespace(n_tokens=len(t) + j) for j in range(n)] for t in texts]

    outs, tokens, secs = wl.timed_generate(Engine(), ["ab", "abcd"], 2, wl.sampling(8))
    assert len(outs) == 2 and tokens == (2 + 3) + (4 + 5) and secs >= 0


def _bench_imports(path: Path) -> set[str]:
    """The bench/ modules ``path`` imports, at any depth of the file."""
    local = {p.stem for p in (ROOT / "bench").glob("*.py")}
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names & local - {path.stem}


def test_bench_imports_go_one_way():
    graph = {p.stem: _bench_imports(p) for p in (ROOT / "bench").glob("*.py")}
    assert graph["workload"] == set()
    assert "bench" not in graph["scaling"] and "workload" in graph["scaling"]
    assert {"workload", "scaling"} <= graph["bench"]

    def reaches(a: str, b: str, seen=()) -> bool:
        return any(n == b or (n not in seen and reaches(n, b, (*seen, n))) for n in graph.get(a, ()))

    circles = sorted(m for m in graph if reaches(m, m))
    assert circles == []
