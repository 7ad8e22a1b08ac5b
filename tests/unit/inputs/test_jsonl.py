"""metareward.inputs.jsonl: one reader for every JSON Lines input, errors naming file and line."""

import pytest

from metareward.inputs.jsonl import json_lines


class Bad(ValueError):
    pass


def test_rows_with_line_numbers_blank_lines_skipped():
    text = '{"a": 1}\n\n  \n{"b": 2}\n'
    assert json_lines(text, "f.jsonl", Bad) == [(1, {"a": 1}), (4, {"b": 2})]


def test_invalid_json_names_file_and_line():
    with pytest.raises(Bad, match=r"^f\.jsonl: line 2: invalid JSON"):
        json_lines('{"a": 1}\n{"b": \n', "f.jsonl", Bad)


def test_non_objects_rejected_unless_allowed():
    with pytest.raises(Bad, match=r"^f\.jsonl: line 1: expected a JSON object, got list"):
        json_lines("[1, 2]\n", "f.jsonl", Bad)
    assert json_lines("[1, 2]\n", "f.jsonl", Bad, objects=False) == [(1, [1, 2])]
