"""Shared pieces of the reader fuzz tests: nasty JSON values and an independent line oracle.

The oracle re-states the annotation rules of WORKSPACE.md ('Data layout') in plain Python,
without importing the reader, so a fuzz case can say what the reader must do with a file:
return these records, or fail at this line.
"""

from __future__ import annotations

import json
import math

from hypothesis import strategies as st

# Values that break naive readers: wrong types, non-finite and huge numbers, odd strings.
NASTY_SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-3, max_value=200),
    st.integers(min_value=-(10 ** 400), max_value=10 ** 400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 0.0, -0.0, 1e308, -1e308, 5e-324, 2 ** 63, 2 ** 64 + 1]),
    st.text(max_size=8),
    st.sampled_from(["", "30", "nan", "\ufeff", "\u2028", "\x00", "a/b", "é", "🎵", "\ud800"]),
)
NASTY = st.recursive(NASTY_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=8)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def finite_number(v) -> bool:
    """A JSON number that is a finite float64 (huge ints overflow float64)."""
    if not is_number(v):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def expected_annotation_outcome(text_lines: list[str]):
    """What read_annotations must do with these physical lines (no BOM, split on '\\n').

    Returns:
      ("ok", [decoded dicts]) or ("line", N) for an error at line N, or ("file", why).
    """
    objs, seen = [], set()
    for lineno, line in enumerate(text_lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            return ("line", lineno)
        if not isinstance(obj, dict):
            return ("line", lineno)
        if any(k not in obj for k in ("qid", "query", "duration", "vid")):
            return ("line", lineno)
        qid, dur = obj["qid"], obj["duration"]
        if not (isinstance(qid, (str, int)) and not isinstance(qid, bool)):
            return ("line", lineno)
        if not finite_number(dur) or float(dur) <= 0:
            return ("line", lineno)
        if not isinstance(obj["query"], str) or not isinstance(obj["vid"], str) or not obj["vid"]:
            return ("line", lineno)
        if "relevant_windows" in obj:
            wins = obj["relevant_windows"]
            if not isinstance(wins, list) or not all(
                    isinstance(w, list) and len(w) == 2 and all(finite_number(v) for v in w)
                    for w in wins):
                return ("line", lineno)
        if str(qid) in seen:
            return ("line", lineno)
        seen.add(str(qid))
        objs.append(obj)
    if not objs:
        return ("file", "no queries")
    annotated = ["relevant_windows" in o for o in objs]
    if any(annotated) and not all(annotated):
        return ("file", "mixed")
    return ("ok", objs)
