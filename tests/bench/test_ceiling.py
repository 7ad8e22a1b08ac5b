"""bench/ceiling.py: the FLOPs a token costs in matrix products, the products' own rate, and a decode rate's share
of it, on numbers worked out by hand."""

import doctest
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ceiling():
    spec = importlib.util.spec_from_file_location("ceiling_under_test", ROOT / "bench" / "ceiling.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_docstring_examples_hold(ceiling):
    pytest.importorskip("torch")
    result = doctest.testmod(ceiling)
    assert result.attempted > 0 and result.failed == 0


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
    out = ceiling.matmul_ceiling("float32", rows=(4, 8), seconds=0.03)
    assert out["dtype"] == "float32" and out["shape"] == "576 x 1536" and out["weights"] == 30
    assert set(out["gflops"]) == {"4", "8"} and all(g > 0 for g in out["gflops"].values())
    assert out["best"] == max(out["gflops"].values())


def test_achieved_is_the_decode_rate_in_product_flops_against_the_ceiling(ceiling):
    # 250 tok/s x 268 MFLOP = 67 GFLOP/s; against 134 that is half
    assert ceiling.achieved(250.0, 268_000_000, 134.0) == {"gflops": 67.0, "of_ceiling": 0.5}
    assert ceiling.achieved(250.0, 268_000_000, 0.0)["of_ceiling"] is None
