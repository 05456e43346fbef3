"""DCASE submission: the 177-query blind list round trip, byte stability, qid-set errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amr_jax.data.records import read_annotations
from amr_jax.eval.submission import SubmissionError, submission_lines

REPO = Path(__file__).resolve().parents[2]


def _synthetic_predictions(blind, seed=0):
    """A stand-in predictor: 12 random windows per query, best first."""
    rng = np.random.default_rng(seed)
    preds = []
    for r in blind:
        starts = rng.uniform(0, r.duration - 2, 12).round(1)
        ends = np.minimum(starts + rng.uniform(1, 20, 12).round(1), r.duration)
        scores = np.sort(rng.uniform(0, 1, 12))[::-1].round(4)
        preds.append({"qid": r.qid, "query": r.query, "vid": r.vid,
                      "pred_relevant_windows": [[float(a), float(b), float(s)]
                                                for a, b, s in zip(starts, ends, scores)]})
    return preds


@pytest.fixture()
def blind_path(shared_data):
    return shared_data / "dcase2026" / "dcase2026_evaluation.jsonl"


def test_blind_round_trip_is_exact_and_byte_stable(blind_path, tmp_path):
    blind = read_annotations(blind_path)
    assert len(blind) == 177
    preds = _synthetic_predictions(blind)
    pred_path = tmp_path / "pred.jsonl"
    # Written in reverse order: the submission follows the blind list, not the file.
    pred_path.write_text("".join(json.dumps(p) + "\n" for p in preds[::-1]))
    outputs = []
    for run in ("a", "b"):
        proc = subprocess.run([sys.executable, "-m", "experiments.submit", f"--pred={pred_path}",
                               f"--blind={blind_path}", f"--output={tmp_path / run}"],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        outputs.append((tmp_path / run / "submission.jsonl").read_bytes())
        assert (tmp_path / run / "system.meta.yaml").is_file()
    assert outputs[0] == outputs[1]
    lines = [json.loads(line) for line in outputs[0].decode().splitlines()]
    assert [line["qid"] for line in lines] == [r.qid for r in blind]
    for line, pred, record in zip(lines, preds, blind):
        assert list(line) == ["qid", "query", "vid", "pred_relevant_windows"]
        assert (line["query"], line["vid"]) == (record.query, record.vid)
        assert line["pred_relevant_windows"] == [w[:2] for w in pred["pred_relevant_windows"][:10]]


def test_missing_and_extra_qids_are_listed(blind_path):
    blind = read_annotations(blind_path)
    preds = _synthetic_predictions(blind)
    with pytest.raises(SubmissionError, match=r"2 blind-list qids have no prediction: "
                                              r"'dcase2026_evaluation_q001', 'dcase2026_evaluation_q177'"):
        submission_lines(blind, preds[1:-1])
    extra = preds + [dict(preds[0], qid="not_a_blind_qid")]
    with pytest.raises(SubmissionError, match=r"1 predicted qids are not in the blind list: 'not_a_blind_qid'"):
        submission_lines(blind, extra)


def test_submit_binary_reports_missing_qids_in_one_line(blind_path, tmp_path):
    preds = _synthetic_predictions(read_annotations(blind_path))[:5]
    pred_path = tmp_path / "pred.jsonl"
    pred_path.write_text("".join(json.dumps(p) + "\n" for p in preds))
    proc = subprocess.run([sys.executable, "-m", "experiments.submit", f"--pred={pred_path}",
                           f"--blind={blind_path}", f"--output={tmp_path / 'out'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert "error: " in proc.stderr and "172 blind-list qids have no prediction" in proc.stderr
    assert not (tmp_path / "out" / "submission.jsonl").exists()
