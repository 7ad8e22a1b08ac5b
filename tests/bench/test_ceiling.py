"""bench/ceiling.py: the FLOPs a token costs in matrix products, the products' own rate, and a decode rate's share
of it, on numbers worked out by hand."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ceiling(bench_file):
    return bench_file("ceiling")


def test_a_tied_output_head_counts_once_and_an_untied_one_counts(ceiling):
    torch = pytest.importorskip("torch")

    class Tiny(torch.nn.Module):
        def __init__(self, tied: bool):
            super().__init__()
            self.embed = torch.nn.Embedding(10, 4)
            self.layer = torch.nn.Linear(4, 4)  # 16 weights
            self.head = torch.nn.Linear(4, 10, bias=False)  # 40 weights
            if tied:
                self.head.weight = self.embed.weight

        def get_output_embeddings(self):
            return self.head

    assert ceiling.flops_per_token(Tiny(tied=True)) == 2 * (16 + 40)
    assert ceiling.flops_per_token(Tiny(tied=False)) == 2 * (16 + 40)  # the embedding itself is no product


def test_the_ceiling_reports_every_row_count_and_the_best(ceiling):
    pytest.importorskip("torch")
    out = ceiling.matmul_ceiling("float32", rows=(4, 8), seconds=0.03, prefill_rows=None)
    assert out["dtype"] == "float32" and out["shape"] == "576 x 1536" and out["weights"] == 30
    assert set(out["gflops"]) == {"4", "8"} and all(g > 0 for g in out["gflops"].values())
    assert out["best"] == max(out["gflops"].values()) == out["prefill"]  # no prefill width: the best stands in


def test_achieved_is_the_decode_rate_in_product_flops_against_the_ceiling(ceiling):
    # 250 tok/s x 268 MFLOP = 67 GFLOP/s; against 134 that is half
    assert ceiling.achieved(250.0, 268_000_000, 134.0) == {"gflops": 67.0, "of_ceiling": 0.5}
    assert ceiling.achieved(250.0, 268_000_000, 0.0)["of_ceiling"] is None


def test_distinct_prompt_tokens_count_each_shared_prefix_once(ceiling):
    rubric = [7] * 300
    # two prompts sharing a 300-token rubric, a third repeating the first: 300 + 2 own + 3 own
    assert ceiling.distinct_prefix_tokens([rubric + [1, 2], rubric + [3, 4, 5], rubric + [1, 2]]) == 305
    # prompts that share no first token share nothing, even if later tokens agree
    assert ceiling.distinct_prefix_tokens([[1, 9, 9], [2, 9, 9]]) == 6
    assert ceiling.distinct_prefix_tokens([]) == 0


def test_the_decode_ceiling_is_the_rate_at_the_first_width_holding_the_rows(ceiling):
    c = {"gflops": {"32": 80.0, "64": 100.0, "128": 130.0, "1024": 150.0}, "best": 130.0, "prefill_rows": 1024}
    assert ceiling.decode_ceiling(c, 32) == 80.0
    assert ceiling.decode_ceiling(c, 33) == 100.0  # products get faster with rows: the next width bounds it
    assert ceiling.decode_ceiling(c, 500) == 130.0  # never the prefill width: decode batches stay under it


def test_the_bound_prices_generated_tokens_at_decode_and_prompt_tokens_at_prefill(ceiling):
    c = {"gflops": {"64": 100.0, "128": 125.0, "1024": 200.0}, "best": 125.0, "prefill_rows": 1024, "prefill": 200.0}
    # 500 generated tokens x 0.25 GFLOP at 100 GFLOP/s (64 rows) = 1.25 s; 2000 prompt tokens x 0.25 at 200 = 2.5 s
    assert ceiling.stage_bound(500, 2000, 250_000_000, c, rows=64) == {"seconds": 3.75, "tok_per_s": 133.3}
    # at 128 rows the decode part takes 1.0 s: 500 / 3.5 s
    assert ceiling.stage_bound(500, 2000, 250_000_000, c, rows=128) == {"seconds": 3.5, "tok_per_s": 142.9}


def test_the_ceiling_measures_a_prefill_width_apart_from_the_best(ceiling):
    pytest.importorskip("torch")
    out = ceiling.matmul_ceiling("float32", rows=(4, 8), seconds=0.03, prefill_rows=64)
    assert set(out["gflops"]) == {"4", "8", "64"} and out["prefill_rows"] == 64
    assert out["best"] == max(out["gflops"]["4"], out["gflops"]["8"]) and out["prefill"] == out["gflops"]["64"]
