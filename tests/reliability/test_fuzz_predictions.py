"""Fuzzed prediction jsonl through the evaluate path: official metrics or an AnnotationError.

Cases: missing and extra qids, duplicate qids, int vs str qids, more than 10 windows, windows
without a score, non-numeric / NaN / inf / huge scores and bounds, wrong types, truncated lines,
random bytes. A valid file must score exactly as `official_reference.official_metrics` (a literal
per-query transcription of the official scorer); an invalid one must fail naming the file and
the line or qid.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from amr_jax.data.errors import AnnotationError
from amr_jax.eval.report import evaluate_files

from fuzzlib import NASTY, finite_number
from official_reference import official_metrics

FUZZ = settings(max_examples=1000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                          HealthCheck.too_slow])
GT = [{"qid": "a", "query": "q", "duration": 30, "vid": "v", "relevant_windows": [[2, 9], [20, 24]]},
      {"qid": 7, "query": "q", "duration": 40, "vid": "w", "relevant_windows": [[0, 40]]},
      {"qid": "c", "query": "q", "duration": 12, "vid": "v", "relevant_windows": [[3, 4]]}]


@st.composite
def prediction_files(draw):
    """(file text, physical lines) for mutated predictions of the GT queries."""
    qids = [g["qid"] for g in GT]
    chosen = draw(st.lists(st.sampled_from(qids + ["7", "zz", 8]), min_size=0, max_size=5))
    if draw(st.booleans()):
        chosen = qids  # half the files name exactly the GT queries
    lines = []
    for qid in chosen:
        n = draw(st.sampled_from([0, 1, 3, 10, 12]))
        wins = [[s, s + draw(st.sampled_from([0.5, 3, 7, -2])), draw(st.floats(0, 1))]
                for s in draw(st.lists(st.integers(0, 35), min_size=n, max_size=n))]
        obj = {"qid": qid, "query": "q", "vid": "v", "pred_relevant_windows": wins}
        kind = draw(st.sampled_from(["good"] * 8 + ["value", "number", "window", "noscore", "field",
                                                    "drop", "truncate"]))
        if kind == "value" and wins:
            w = draw(st.sampled_from(wins))
            w[draw(st.integers(0, 2))] = draw(NASTY)
        elif kind == "number" and wins:  # the classic bad scores and bounds
            w = draw(st.sampled_from(wins))
            w[draw(st.integers(0, 2))] = draw(st.sampled_from(
                [float("nan"), float("inf"), -float("inf"), 10 ** 400, "0.5", None, True, [0.5]]))
        elif kind == "window" and wins:
            wins[draw(st.integers(0, len(wins) - 1))] = draw(NASTY)
        elif kind == "noscore" and wins:
            wins[draw(st.integers(0, len(wins) - 1))] = [1, 2]
        elif kind == "field":
            obj[draw(st.sampled_from(["qid", "pred_relevant_windows"]))] = draw(NASTY)
        elif kind == "drop":
            del obj[draw(st.sampled_from(["qid", "pred_relevant_windows"]))]
        text = json.dumps(obj)
        if kind == "truncate":
            text = text[:draw(st.integers(0, len(text) - 1))]
        event(kind)
        lines.append(text)
    return "\n".join(lines) + "\n", lines


def expected(lines):
    """("ok", qid -> windows) / ("line", N) / ("file", None) by the documented rules."""
    by_key, seen = {}, set()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            return "line", lineno
        if not isinstance(obj, dict) or "qid" not in obj or "pred_relevant_windows" not in obj:
            return "line", lineno
        qid, wins = obj["qid"], obj["pred_relevant_windows"]
        if not isinstance(qid, (str, int)) or isinstance(qid, bool) or str(qid) in seen:
            return "line", lineno
        if not isinstance(wins, list) or not all(
                isinstance(w, list) and len(w) >= 2 and all(finite_number(v) for v in w)
                for w in wins):
            return "line", lineno
        seen.add(str(qid))
        by_key[str(qid)] = wins
    if set(by_key) != {str(g["qid"]) for g in GT}:
        return "file", "qids"
    if any(len(w) < 3 for wins in by_key.values() for w in wins[:10]):
        return "file", "score"
    return "ok", by_key


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference averages empty lists (NaN)
@FUZZ
@given(prediction_files())
def test_fuzzed_predictions(tmp_path, case):
    text, lines = case
    gt, pred, out = tmp_path / "gt.jsonl", tmp_path / "pred.jsonl", tmp_path / "m.json"
    gt.write_text("".join(json.dumps(g) + "\n" for g in GT))
    pred.write_text(text)
    out.unlink(missing_ok=True)
    kind, detail = expected(lines)
    event(f"expected {kind}")
    try:
        metrics = evaluate_files(gt, pred, out)
    except AnnotationError as e:
        message = str(e)
        assert kind != "ok", f"refused a valid file: {message}"
        assert message.startswith(str(pred)), message
        if kind == "line":
            assert message.startswith(f"{pred}:{detail}"), (detail, message)
        elif detail == "score":
            assert "qid" in message, message
        assert not out.exists()
        return
    assert kind == "ok", f"accepted a file that should fail ({kind} {detail})"
    want = official_metrics({str(g["qid"]): g["relevant_windows"] for g in GT},
                            {k: [[float(v) for v in w[:3]] for w in wins] for k, wins in detail.items()})
    if not any(detail.values()):  # no query has a window: the reference averages nothing (NaN),
        want["mAP"] = {k: 0.0 for k in want["mAP"]}  # metrics_from_scores reports 0 by design
    assert metrics["R1"] == want["R1"] and metrics["mAP"] == want["mAP"]
    assert json.loads(out.read_text())["mAP"] == want["mAP"]


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_random_bytes_predictions(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("p")
    gt, pred = tmp / "gt.jsonl", tmp / "pred.jsonl"
    gt.write_text("".join(json.dumps(g) + "\n" for g in GT))
    pred.write_bytes(data)
    try:
        evaluate_files(gt, pred)
    except AnnotationError as e:
        assert str(e).startswith(str(pred)), str(e)
    else:
        raise AssertionError("random bytes scored")
