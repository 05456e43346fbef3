"""Reading and writing predictions in the DCASE jsonl format.

Each line: {"qid", "query", "vid", "pred_relevant_windows": [[st, en, score], ...]}
with at most 10 windows, best first. Submissions strip the scores
(`strip_scores=True`); local scoring needs them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import logging

from amr_jax.data.errors import AnnotationError
from amr_jax.data.records import QueryRecord, iter_json_lines
from amr_jax.io_utils import atomic_write_lines

MAX_WINDOWS = 10
PRED_FIELD = "pred_relevant_windows"


def prediction_lines(records: Sequence[QueryRecord], windows: np.ndarray, valid: np.ndarray,
                     *, strip_scores: bool = False, decimals: int = 4) -> list[dict]:
    """Builds prediction dicts from fixed-shape outputs.

    Args:
      records: the B queries, in the order of the arrays.
      windows: [B, K, 3] (start_s, end_s, score), best first.
      valid: [B, K] bool; invalid slots are left out.
      strip_scores: write [st, en] only (DCASE submission format).
      decimals: rounding of every number.
    """
    return list(iter_prediction_lines(records, windows, valid, strip_scores=strip_scores,
                                      decimals=decimals))


def iter_prediction_lines(records: Sequence[QueryRecord], windows: np.ndarray, valid: np.ndarray,
                          *, strip_scores: bool = False, decimals: int = 4):
    """`prediction_lines`, one dict at a time (a 50,000-query split never holds all of them)."""
    valid = np.asarray(valid, bool)
    if np.shape(windows)[0] != len(records) or valid.shape != np.shape(windows)[:2]:
        raise ValueError(f"{len(records)} records vs windows {np.shape(windows)} / valid "
                         f"{valid.shape}")
    for r, w, v in zip(records, windows, valid):
        kept = np.round(np.asarray(w, np.float64)[v][:MAX_WINDOWS], decimals)
        if strip_scores:
            kept = kept[:, :2]
        yield {"qid": r.qid, "query": r.query, "vid": r.vid, PRED_FIELD: kept.tolist()}


def write_predictions(path: str | os.PathLike, records: Sequence[QueryRecord], windows: np.ndarray,
                      valid: np.ndarray, *, strip_scores: bool = False) -> Path:
    """Writes a predictions jsonl atomically, line by line; see `prediction_lines`."""
    lines = iter_prediction_lines(records, windows, valid, strip_scores=strip_scores)
    return atomic_write_lines(path, (json.dumps(line) + "\n" for line in lines))


def check_prediction_windows(predictions: Sequence[dict], *, source: str) -> dict[str, list]:
    """Warns about windows the official scorer reads in a way a user may not expect.

    The semantics stay the official ones (only the first 10 windows count; a
    reversed window overlaps nothing); the warning says how many queries are
    affected and names the first qids, so a wrong column order or an untruncated
    list does not silently cost points.

    Returns:
      {"too_many": [qid, ...], "reversed": [qid, ...]}.
    """
    found = {"too_many": [], "reversed": []}
    for p in predictions:
        wins = p[PRED_FIELD]
        if len(wins) > MAX_WINDOWS:
            found["too_many"].append(p["qid"])
        if any(w[1] < w[0] for w in wins[:MAX_WINDOWS]):
            found["reversed"].append(p["qid"])
    if found["too_many"]:
        logging.warning("%s: %d queries have more than %d windows; only the first %d are scored "
                        "(qids %s)", source, len(found["too_many"]), MAX_WINDOWS, MAX_WINDOWS,
                        _first(found["too_many"]))
    if found["reversed"]:
        logging.warning("%s: %d queries have reversed windows (end < start), which overlap "
                        "nothing when scored (qids %s)", source, len(found["reversed"]),
                        _first(found["reversed"]))
    return found


def _first(qids: list, n: int = 5) -> str:
    shown = ", ".join(repr(q) for q in qids[:n])
    return shown + (f", ... ({len(qids) - n} more)" if len(qids) > n else "")


def _finite_number(v) -> bool:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer too large for float64
        return False


def read_predictions(path: str | os.PathLike) -> list[dict]:
    """Reads a predictions jsonl, checking the fields the scorer needs.

    Raises:
      AnnotationError: naming the file and line (and qid) for malformed JSON,
        a missing field, a qid that is not a string or integer, a duplicate
        qid, or a window that is not a list of at least two finite numbers
        (NaN, inf and numbers beyond float64 are refused, not scored).
    """
    out, seen = [], {}
    for where, obj in iter_json_lines(path, kind="predictions"):
        if not isinstance(obj, dict) or "qid" not in obj or PRED_FIELD not in obj:
            raise AnnotationError(f"{where}: each line needs 'qid' and '{PRED_FIELD}'")
        qid = obj["qid"]
        if not isinstance(qid, (str, int)) or isinstance(qid, bool):
            raise AnnotationError(f"{where}: 'qid' must be a string or integer, got {qid!r}")
        key = str(qid)
        if key in seen:
            raise AnnotationError(f"{where}: duplicate qid {qid!r} (first on line {seen[key]})")
        seen[key] = where.rsplit(":", 1)[1]
        wins = obj[PRED_FIELD]
        if not isinstance(wins, list) or any(
                not isinstance(w, list) or len(w) < 2 or not all(_finite_number(v) for v in w)
                for w in wins):
            raise AnnotationError(f"{where} qid={qid}: '{PRED_FIELD}' must be a list of "
                                  "[start, end, score] lists of finite numbers")
        out.append(obj)
    return out
