"""Annotation parsing: real files, cleaning, and every malformed-input case."""

import json

import numpy as np
import pytest

from amr_jax.data.errors import AnnotationError
from amr_jax.data.records import read_annotations


def _write(tmp_path, lines, name="ann.jsonl"):
    p = tmp_path / name
    p.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return p


GOOD = {"qid": "a_1", "query": "A dog barks", "duration": 30, "vid": "a", "relevant_windows": [[3, 9]]}


def test_reads_every_real_file(shared_data):
    counts = {"castella/castella_train_release.jsonl": 2182, "castella/castella_val_release.jsonl": 352,
              "castella/castella_test_release.jsonl": 1347,
              "clotho_moment/clotho_moment_val_release.jsonl": 4918,
              "dcase2026/dcase2026_evaluation.jsonl": 177, "tut2017/tut2017_test_release.jsonl": 104}
    for name, n in counts.items():
        records = read_annotations(shared_data / name)
        assert len(records) == n, name
    blind = read_annotations(shared_data / "dcase2026/dcase2026_evaluation.jsonl")
    assert all(r.windows is None for r in blind)
    clotho = read_annotations(shared_data / "clotho_moment/clotho_moment_val_release.jsonl")
    assert "fg_dB" in clotho[0].extra and isinstance(clotho[0].qid, str)


def test_windows_clipped_and_bad_ones_dropped_silently(tmp_path, caplog):
    line = dict(GOOD, relevant_windows=[[28, 32], [40, 50], [9, 3], [5, 5], [1, 2]])
    (r,) = read_annotations(_write(tmp_path, [line]))
    np.testing.assert_array_equal(r.windows, [[28, 30], [1, 2]])
    np.testing.assert_array_equal(r.raw_windows, line["relevant_windows"])  # scorer sees raw
    # Reading is silent: scoring uses the raw windows; training warns where clipping matters
    # (tests/train/test_trainer.py::test_training_warns_once_about_windows_clipped_away).
    assert "dropping" not in caplog.text and "[40.0, 50.0]" not in caplog.text


def test_real_train_annotation_error_is_dropped(shared_data):
    records = read_annotations(shared_data / "castella/castella_train_release.jsonl")
    (r,) = [r for r in records if r.qid == "67AE9ZKvECs_1"]
    assert (r.windows[:, 1] <= r.duration).all()


@pytest.mark.parametrize("bad_line, message", [
    ('{"qid": "x", "query": ', "malformed JSON"),
    ('[1, 2]', "expected a JSON object"),
    ({"qid": "x", "query": "q", "vid": "v"}, "missing field(s) ['duration']"),
    (dict(GOOD, qid="b", duration=-1), "'duration' must be a positive number"),
    (dict(GOOD, qid="b", duration="30"), "'duration' must be a positive number"),
    (dict(GOOD, qid="b", relevant_windows=[[1, 2, 3]]), "is not a [start, end] pair"),
    (dict(GOOD, qid="b", relevant_windows=[[1, "2"]]), "is not a [start, end] pair"),
    (dict(GOOD, qid="b", relevant_windows="1-2"), "must be a list"),
    (dict(GOOD, qid="b", vid=""), "'vid' must be a non-empty string"),
    (dict(GOOD, qid=None), "'qid' must be a string or integer"),
])
def test_malformed_lines_name_file_and_line(tmp_path, bad_line, message):
    path = _write(tmp_path, [GOOD, bad_line])
    with pytest.raises(AnnotationError) as e:
        read_annotations(path)
    assert message in str(e.value)
    assert f"{path}:2" in str(e.value)


def test_duplicate_qid(tmp_path):
    path = _write(tmp_path, [GOOD, dict(GOOD, vid="b")])
    with pytest.raises(AnnotationError, match=r"ann.jsonl:2: duplicate qid 'a_1' \(first on line 1\)"):
        read_annotations(path)


def test_mixed_blind_and_annotated(tmp_path):
    blind = {k: v for k, v in GOOD.items() if k != "relevant_windows"}
    path = _write(tmp_path, [GOOD, dict(blind, qid="b")])
    with pytest.raises(AnnotationError, match="qid='b' .line 2. has none"):
        read_annotations(path)


def test_missing_and_empty_file(tmp_path):
    with pytest.raises(AnnotationError, match="not found"):
        read_annotations(tmp_path / "nope.jsonl")
    with pytest.raises(AnnotationError, match="no queries"):
        read_annotations(_write(tmp_path, ["", "  "]))
