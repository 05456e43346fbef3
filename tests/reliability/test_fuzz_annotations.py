"""Fuzzed annotation jsonl: every file gives the right records or an AnnotationError at the right line.

The expected outcome comes from `fuzzlib.expected_annotation_outcome`, an independent restatement
of the rules; a reader that accepts a bad line, rejects a good one, blames the wrong line, or lets a
raw json / UnicodeDecodeError / OverflowError / RecursionError escape fails here.
"""

from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from amr_jax.data.errors import AnnotationError
from amr_jax.data.records import read_annotations

from fuzzlib import NASTY, expected_annotation_outcome

FUZZ = settings(max_examples=1000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                          HealthCheck.too_slow])


def _good_line(draw, qid):
    duration = draw(st.sampled_from([1, 30, 30.5, 183.0, 1e-3]))
    wins = draw(st.lists(st.lists(st.floats(-50, 400, allow_nan=False), min_size=2, max_size=2),
                         max_size=4))
    return {"qid": qid, "query": draw(st.text(max_size=12)), "duration": duration,
            "vid": draw(st.sampled_from(["a", "b", "vid_é", "🎵"])), "relevant_windows": wins}


@st.composite
def annotation_files(draw):
    """(bytes of the file, its physical lines without BOM) from mutated good lines."""
    lines = []
    blind = draw(st.booleans())
    for i in range(draw(st.integers(0, 5))):
        obj = _good_line(draw, draw(st.sampled_from([f"q{i}", i, "q0", 0, "0"])))
        if blind:
            del obj["relevant_windows"]
        kind = draw(st.sampled_from(["good", "good", "field", "drop", "extra", "truncate",
                                     "blank", "array", "deep", "bigint"]))
        if kind == "field":
            obj[draw(st.sampled_from(["qid", "query", "duration", "vid", "relevant_windows"]))] = \
                draw(NASTY)
        elif kind == "drop":
            del obj[draw(st.sampled_from(sorted(obj)))]
        elif kind == "extra":
            obj[draw(st.text(max_size=5))] = draw(NASTY)
        text = json.dumps(obj, ensure_ascii=draw(st.booleans()))
        if kind == "truncate":
            text = text[:draw(st.integers(0, max(0, len(text) - 1)))]
        elif kind == "blank":
            text = draw(st.sampled_from(["", "   ", "\t"]))
        elif kind == "array":
            text = json.dumps([obj])
        elif kind == "deep":
            text = "[" * 3000 + "]" * 3000
        elif kind == "bigint":
            text = text.replace('"duration": ', '"duration": 1' + "0" * 5000 + " + ", 1) \
                if '"duration": ' in text else "1" + "0" * 5000
        lines.append(text)
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    bom = draw(st.booleans())
    body = eol.join(lines) + (eol if lines and draw(st.booleans()) else "")
    data = (b"\xef\xbb\xbf" if bom else b"") + body.encode("utf-8", errors="surrogatepass")
    return data, body.split("\n")


def _check_error(error: AnnotationError, path, line: int | None):
    message = str(error)
    assert message.startswith(str(path)), message
    if line is not None:
        assert message.startswith(f"{path}:{line}"), (line, message)


@FUZZ
@given(annotation_files())
def test_mutated_annotation_files(tmp_path, case):
    data, lines = case
    path = tmp_path / "ann.jsonl"
    path.write_bytes(data)
    try:
        "\n".join(lines).encode("utf-8")
        valid_utf8 = True
    except UnicodeEncodeError:  # a lone surrogate became invalid UTF-8 bytes
        valid_utf8 = False
    kind, detail = expected_annotation_outcome(lines) if valid_utf8 else ("line", None)
    event(f"expected {kind}")
    try:
        records = read_annotations(path)
    except AnnotationError as e:
        assert kind != "ok", f"rejected a valid file: {e}"
        _check_error(e, path, detail if kind == "line" else None)
        return
    assert kind == "ok", f"accepted a file that should fail ({kind} {detail})"
    assert len(records) == len(detail)
    for r, obj in zip(records, detail):
        assert r.qid == obj["qid"] and r.query == obj["query"] and r.vid == obj["vid"]
        assert r.duration == float(obj["duration"])
        if "relevant_windows" in obj:
            raw = np.asarray(obj["relevant_windows"], np.float64).reshape(-1, 2)
            np.testing.assert_array_equal(r.raw_windows, raw)
            kept = [[min(max(s, 0), r.duration), min(max(e, 0), r.duration)] for s, e in raw]
            kept = [w for w in kept if w[1] > w[0]]
            np.testing.assert_array_equal(r.windows, np.asarray(kept, np.float32).reshape(-1, 2))
            assert all(math.isfinite(v) for v in r.windows.ravel())
        else:
            assert r.windows is None and r.raw_windows is None


@settings(FUZZ, max_examples=600)
@given(st.binary(max_size=300), st.sampled_from([b"", b"\xef\xbb\xbf", b'{"qid": 1, "query": "',
                                                 b'{"qid": "a", "query": "q", "duration": 3, "vid": "v"}\n']))
def test_random_bytes(tmp_path, data, prefix):
    path = tmp_path / "ann.jsonl"
    path.write_bytes(prefix + data)
    try:
        records = read_annotations(path)
    except AnnotationError as e:
        _check_error(e, path, None)
        return
    assert records and all(r.duration > 0 and math.isfinite(r.duration) for r in records)


def test_bom_and_crlf_read_like_plain(tmp_path):
    lines = [{"qid": "a", "query": "q", "duration": 10, "vid": "v", "relevant_windows": [[1, 2]]},
             {"qid": 2, "query": "é", "duration": 5.5, "vid": "w", "relevant_windows": []}]
    plain = "".join(json.dumps(l) + "\n" for l in lines)
    (tmp_path / "plain.jsonl").write_text(plain)
    (tmp_path / "odd.jsonl").write_bytes(b"\xef\xbb\xbf" + plain.replace("\n", "\r\n").encode())
    a, b = read_annotations(tmp_path / "plain.jsonl"), read_annotations(tmp_path / "odd.jsonl")
    assert [(r.qid, r.duration, r.raw_windows.tolist()) for r in a] == \
        [(r.qid, r.duration, r.raw_windows.tolist()) for r in b]


def test_named_failures(tmp_path):
    """The classes of bad input the brief lists, each at its line."""
    good = '{"qid": "a", "query": "q", "duration": 10, "vid": "v", "relevant_windows": [[1, 2]]}'
    cases = {
        b"\xff\xfe" + good.encode(): "not UTF-8",
        (good + "\n" + good.replace('"a"', '"b"').replace("10", "1" + "0" * 400)).encode(): ":2",
        (good + "\n" + good.replace("[[1, 2]]", "[[1, 1" + "0" * 400 + "]]")).encode(): ":2",
        ("[" * 3000).encode(): "nested",
        good.replace("10", "1" + "0" * 5000).encode(): ":1",
    }
    for i, (data, needle) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.jsonl"
        path.write_bytes(data)
        try:
            read_annotations(path)
        except AnnotationError as e:
            assert str(e).startswith(f"{path}:1") or needle == ":2", str(e)
            assert needle in str(e), (needle, str(e))
        else:
            raise AssertionError(f"case {i} accepted")
