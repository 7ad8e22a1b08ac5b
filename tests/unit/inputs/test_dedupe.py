import pytest

from metareward.inputs import dedupe


def test_normalize_drops_case_punctuation_and_extra_space():
    assert dedupe.normalize("  WHY do cats purr,  so?") == "why do cats purr so"


def test_shingle_jaccard_worked_by_hand():
    """'why do cats purr' (16 chars) has 16-5+1 = 12 shingles of 5 chars; 'why do cats purr so' (19 chars) has
    15, and the first 12 are the same because the shorter text is a prefix: J = 12/15 = 0.8.
    'why do dogs bark' shares only 'why d', 'hy do', 'y do ' with the first: J = 3/(12+12-3) = 1/7."""
    a, b = dedupe.shingles("Why do cats purr"), dedupe.shingles("Why do cats purr, so?")
    assert (len(a), len(b), len(a & b)) == (12, 15, 12)
    assert dedupe.jaccard(a, b) == pytest.approx(0.8)
    c = dedupe.shingles("Why do dogs bark")
    assert a & c == {"why d", "hy do", "y do "}
    assert dedupe.jaccard(a, c) == pytest.approx(1 / 7)
    assert dedupe.shingles("Hi!") == {"hi"}  # shorter than a shingle: the whole text


def test_near_duplicates_removed_keeping_the_first():
    texts = ["Why do cats purr", "Why do dogs bark", "WHY do cats purr, so?", "why do dogs bark?"]
    keep, of_texts, of_ref = dedupe.near_dedupe(texts, threshold=0.7)
    assert keep == [0, 1] and of_texts == 2 and of_ref == 0
    # at 0.85 the 0.8-similar pair survives, the identical-after-normalisation pair does not
    assert dedupe.near_dedupe(texts, threshold=0.85)[0] == [0, 1, 2]


def test_near_duplicates_of_the_reference_set_are_counted_apart():
    keep, of_texts, of_ref = dedupe.near_dedupe(["why do cats purr so", "Name a bird"], 0.7,
                                                against=["Why do cats purr"])
    assert keep == [1] and (of_texts, of_ref) == (0, 1)


def test_lsh_rows_per_band_keep_misses_rare_at_the_threshold():
    """r rows x (128/r) bands: a pair at J is missed with probability (1 - J^r)^(128/r). At J=0.7: r=4 gives
    (1-0.2401)^32 = 1.5e-4 (ok), r=8 gives (1-0.0576)^16 = 0.39 (not ok), so r=4."""
    assert dedupe._rows_per_band(0.7, 128) == 4
    assert dedupe._rows_per_band(0.5, 128) == 2
    with pytest.raises(ValueError):
        dedupe.NearDuplicateIndex(threshold=0.0)


def test_many_random_texts_have_no_false_positive_and_a_planted_copy_is_found():
    import random

    rng = random.Random(0)
    vocab = [f"word{i}" for i in range(2000)]
    texts = [" ".join(rng.choice(vocab) for _ in range(10)) for _ in range(500)]
    texts.append(texts[123] + " please")
    keep, of_texts, _ = dedupe.near_dedupe(texts, 0.7)
    assert of_texts == 1 and 500 not in keep and len(keep) == 500
