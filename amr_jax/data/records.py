"""Typed query records read from DCASE / lighthouse annotation jsonl files.

One line per query:
  {"qid": ..., "query": "...", "duration": 183.0, "vid": "...",
   "relevant_windows": [[st, en], ...]}
`relevant_windows` is absent on blind evaluation sets.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from amr_jax.data.errors import AnnotationError

REQUIRED_FIELDS = ("qid", "query", "duration", "vid")
WINDOWS_FIELD = "relevant_windows"


@dataclasses.dataclass(frozen=True)
class QueryRecord:
    """One annotated query.

    Attributes:
      qid: query id as written in the file (str or int), kept for output.
      query: the free-text query.
      duration: recording duration in seconds.
      vid: recording id; audio features live in `<audio_dir>/<vid>.npz`.
      windows: [K, 2] float32 cleaned windows in seconds (clipped to
        `duration`, empty or reversed ones dropped), file order; None on blind
        sets. Used for training targets.
      raw_windows: [K', 2] float64 windows exactly as in the file; None on
        blind sets. The official scorer reads these, so metrics do too.
      extra: any other keys of the line (e.g. `fg_dB`).
    """

    qid: str | int
    query: str
    duration: float
    vid: str
    windows: np.ndarray | None
    raw_windows: np.ndarray | None
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> str:
        """The qid as a string: dictionary key and text feature file stem."""
        return str(self.qid)

    @property
    def has_windows(self) -> bool:
        return self.windows is not None


def _finite(v) -> bool:
    """A finite float64: NaN/inf and integers too large for float64 (1e400 as an int) are not."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _parse_windows(raw, *, where: str) -> np.ndarray:
    if not isinstance(raw, list):
        raise AnnotationError(f"{where}: '{WINDOWS_FIELD}' must be a list of [start, end], got {raw!r}")
    for w in raw:
        if (not isinstance(w, (list, tuple)) or len(w) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in w)):
            raise AnnotationError(f"{where}: window {w!r} is not a [start, end] pair of numbers")
        if not all(_finite(v) for v in w):
            raise AnnotationError(f"{where}: window {w!r} is not finite")
    return np.asarray(raw, dtype=np.float64).reshape(-1, 2)


def clean_windows(raw: np.ndarray, duration: float, *, where: str) -> np.ndarray:
    """Clips windows to [0, duration] and drops empty or reversed ones.

    Silent: the metrics read the raw windows, so a dropped window only matters
    where these cleaned ones are used; the training pipeline warns there.

    Args:
      raw: [K, 2] windows in seconds.
      duration: recording length in seconds.
      where: "file:line qid=..." for messages.

    Returns:
      [K', 2] float32, K' <= K, in file order.
    """
    clipped = np.clip(raw, 0.0, duration)
    del where  # kept for callers; nothing to report here
    keep = clipped[:, 1] > clipped[:, 0]
    return clipped[keep].astype(np.float32)


def parse_record(obj, *, where: str) -> QueryRecord:
    """Validates one decoded json line and builds its record."""
    if not isinstance(obj, dict):
        raise AnnotationError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in obj]
    if missing:
        raise AnnotationError(f"{where}: missing field(s) {missing}")
    qid = obj["qid"]
    if not isinstance(qid, (str, int)) or isinstance(qid, bool):
        raise AnnotationError(f"{where}: 'qid' must be a string or integer, got {qid!r}")
    where = f"{where} qid={qid}"
    duration = obj["duration"]
    if (not isinstance(duration, (int, float)) or isinstance(duration, bool)
            or not _finite(duration) or duration <= 0):
        raise AnnotationError(f"{where}: 'duration' must be a positive number, got {duration!r}")
    if not isinstance(obj["query"], str):
        raise AnnotationError(f"{where}: 'query' must be a string")
    if not isinstance(obj["vid"], str) or not obj["vid"]:
        raise AnnotationError(f"{where}: 'vid' must be a non-empty string")
    windows = raw_windows = None
    if WINDOWS_FIELD in obj:
        raw_windows = _parse_windows(obj[WINDOWS_FIELD], where=where)
        windows = clean_windows(raw_windows, float(duration), where=where)
    extra = {k: v for k, v in obj.items() if k not in REQUIRED_FIELDS + (WINDOWS_FIELD,)}
    return QueryRecord(qid=qid, query=obj["query"], duration=float(duration), vid=obj["vid"],
                       windows=windows, raw_windows=raw_windows, extra=extra)


def iter_json_lines(path: str | os.PathLike, *, kind: str):
    """Yields (where, decoded object) per non-blank line; `where` is "file:line".

    Lines end at b"\\n" only (CRLF works; a lone CR is not a line break, as for
    `wc -l`); a UTF-8 byte-order mark at the start of the file is skipped.

    Raises:
      AnnotationError: the file is missing, a line is not UTF-8, or not valid
        JSON (including numbers Python refuses and nesting too deep to decode).
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: {kind} file not found")
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise AnnotationError(f"{where}: not UTF-8 text (invalid byte at column "
                                      f"{e.start + 1})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise AnnotationError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
            except RecursionError:
                raise AnnotationError(f"{where}: malformed JSON (nested too deeply)") from None
            except ValueError as e:  # e.g. an integer with more digits than Python converts
                raise AnnotationError(f"{where}: malformed JSON ({e})") from None
            yield where, obj


def read_annotations(path: str | os.PathLike) -> list[QueryRecord]:
    """Reads and validates an annotation jsonl file.

    Raises:
      AnnotationError: naming the file, line and qid, for malformed json,
        missing fields, bad values, duplicate qids, a file with no queries, or a
        file that mixes queries with and without windows.
    """
    path = Path(path)
    records: list[QueryRecord] = []
    first_line: dict[str, str] = {}
    for where, obj in iter_json_lines(path, kind="annotation"):
        record = parse_record(obj, where=where)
        if record.key in first_line:
            raise AnnotationError(
                f"{where}: duplicate qid {record.qid!r} (first on line {first_line[record.key]})")
        first_line[record.key] = where.rsplit(":", 1)[1]
        records.append(record)
    if not records:
        raise AnnotationError(f"{path}: no queries")
    with_windows = sum(r.has_windows for r in records)
    if 0 < with_windows < len(records):
        blind = next(r for r in records if not r.has_windows)
        raise AnnotationError(
            f"{path}: {with_windows} of {len(records)} queries have '{WINDOWS_FIELD}' but qid="
            f"{blind.qid!r} (line {first_line[blind.key]}) has none; a split is either annotated or blind")
    return records


def is_annotated(records: list[QueryRecord]) -> bool:
    """True when the split carries ground-truth windows (not a blind set)."""
    return records[0].has_windows
