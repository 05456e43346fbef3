"""Predictions jsonl: round trip, submission format, and malformed files."""

import json

import numpy as np
import pytest

from amr_jax.data.errors import AnnotationError
from amr_jax.data.records import parse_record
from amr_jax.eval.predictions import read_predictions, write_predictions


def _records(n):
    return [parse_record({"qid": i, "query": f"q{i}", "duration": 30, "vid": "v",
                          "relevant_windows": [[1, 2]]}, where="t") for i in range(n)]


def test_round_trip_and_strip_scores(tmp_path):
    windows = np.array([[[1, 5, 0.9], [2, 3, 0.5], [0, 0, 0]], [[4, 8, 0.7], [0, 0, 0], [0, 0, 0]]])
    valid = np.array([[True, True, False], [True, False, False]])
    path = write_predictions(tmp_path / "p.jsonl", _records(2), windows, valid)
    preds = read_predictions(path)
    assert preds[0]["pred_relevant_windows"] == [[1, 5, 0.9], [2, 3, 0.5]]
    assert preds[1] == {"qid": 1, "query": "q1", "vid": "v", "pred_relevant_windows": [[4, 8, 0.7]]}
    sub = write_predictions(tmp_path / "s.jsonl", _records(2), windows, valid, strip_scores=True)
    assert json.loads(sub.read_text().splitlines()[0])["pred_relevant_windows"] == [[1, 5], [2, 3]]
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file


@pytest.mark.parametrize("content, message", [
    ('{"qid": 1, "pred_relevant_windows": [[1, 2, 0.5]]}\n{"qid": 1, "pred', "p.jsonl:2: malformed JSON"),
    ('{"qid": 1}\n', "p.jsonl:1: each line needs 'qid' and 'pred_relevant_windows'"),
    ('{"qid": 1, "pred_relevant_windows": [[1, 2]]}\n{"qid": 1, "pred_relevant_windows": []}\n',
     "p.jsonl:2: duplicate qid 1 (first on line 1)"),
    ('{"qid": 1, "pred_relevant_windows": [["a", 2]]}\n', "must be a list of [start, end, score]"),
])
def test_malformed_predictions(tmp_path, content, message):
    (tmp_path / "p.jsonl").write_text(content)
    with pytest.raises(AnnotationError) as e:
        read_predictions(tmp_path / "p.jsonl")
    assert message in str(e.value)
