"""The engines' token-list helpers (their doctests show the cases)."""

import doctest

import pytest

from metareward.engines import tokens


def test_doctests():
    result = doctest.testmod(tokens)
    assert result.attempted > 0 and result.failed == 0


def test_choices_must_share_a_prefix_and_add_a_token():
    with pytest.raises(ValueError, match="share no leading token"):
        tokens.split_choices([1, 2], [[3, 4]])
    with pytest.raises(ValueError, match="adds no token"):
        tokens.split_choices([1, 2], [[1, 2], [1, 2, 3]])
