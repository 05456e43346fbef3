"""DCASE 2026 Task 6 submission files: predictions checked against the blind list, scores stripped.

The official baseline's `create_submission` keeps each query's windows in the
order they are listed (its predictions are already best first), drops the score
of each `[start, end, score]` window, and writes one line per query with the
keys `qid, query, vid, pred_relevant_windows`. This module does the same, and in
addition:

- checks the qid set against the blind annotation list (missing or extra qids
  raise one `SubmissionError` listing them) and writes lines in blind-list order;
- keeps at most 10 windows (the official scorer reads no more);
- warns when a query's windows are not in descending score order, because a
  stripped file can no longer be re-sorted and R1 reads the first window;
- writes a system-meta YAML skeleton beside the jsonl for the technical details
  the challenge asks for.

Both files are written atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from absl import logging

from amr_jax.data.errors import AnnotationError
from amr_jax.data.records import QueryRecord, read_annotations
from amr_jax.eval.predictions import MAX_WINDOWS, PRED_FIELD, read_predictions
from amr_jax.io_utils import atomic_write_text

SUBMISSION_FILE = "submission.jsonl"
META_FILE = "system.meta.yaml"
SUBMISSION_KEYS = ("qid", "query", "vid", PRED_FIELD)


class SubmissionError(AnnotationError):
    """Predictions that do not cover the blind list exactly."""

    hint = "predict every query of the blind list (and only those) before writing a submission"


def _listed(qids: Sequence, n: int = 20) -> str:
    shown = ", ".join(repr(q) for q in qids[:n])
    return shown + (f", ... ({len(qids) - n} more)" if len(qids) > n else "")


def submission_lines(blind: Sequence[QueryRecord], predictions: Sequence[dict], *,
                     source: str = "predictions") -> list[dict]:
    """One submission dict per blind query, in blind-list order.

    Args:
      blind: the blind list's records.
      predictions: dicts with `qid` and `pred_relevant_windows` ([start, end, score] lists).
      source: name of the predictions file, for messages.

    Raises:
      SubmissionError: qids missing from the predictions or not in the blind list.
    """
    by_qid = {str(p["qid"]): p for p in predictions}
    blind_keys = {r.key for r in blind}
    missing = [r.qid for r in blind if r.key not in by_qid]
    extra = [p["qid"] for p in predictions if str(p["qid"]) not in blind_keys]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} blind-list qids have no prediction: {_listed(missing)}")
        if extra:
            parts.append(f"{len(extra)} predicted qids are not in the blind list: {_listed(extra)}")
        raise SubmissionError(f"{source}: " + "; ".join(parts))
    lines, unsorted = [], []
    for r in blind:
        windows = by_qid[r.key][PRED_FIELD][:MAX_WINDOWS]
        scores = [w[2] for w in windows if len(w) > 2]
        if len(scores) == len(windows) and any(a < b for a, b in zip(scores, scores[1:])):
            unsorted.append(r.qid)
        lines.append({"qid": r.qid, "query": r.query, "vid": r.vid,
                      PRED_FIELD: [[w[0], w[1]] for w in windows]})
    if unsorted:
        logging.warning("%s: %d queries list windows out of score order; kept as listed (the first "
                        "window is the one R1 scores): %s", source, len(unsorted), _listed(unsorted, 5))
    return lines


def meta_skeleton(label: str, num_queries: int) -> str:
    """A system-meta YAML skeleton: the fields the challenge asks for, to be filled in."""
    return f"""# DCASE 2026 Task 6 system meta information (fill in every TODO).
submission:
  label: {label}
  name: TODO system name
  abbreviation: TODO
  authors:
    - lastname: TODO
      firstname: TODO
      email: TODO
      affiliation:
        institution: TODO
        department: TODO
        location: TODO
system:
  description:
    input_features: MS-CLAP 2023 audio (768-d HTSAT) and text (GPT-2) features as released
    training_data: TODO (e.g. CASTELLA train; Clotho-Moment for pretraining)
    pretrained_models: TODO (e.g. MS-CLAP 2023)
    model: TODO (e.g. QD-DETR, training-free JointProj)
  complexity:
    total_parameters: TODO
  source_code: TODO
results:
  development_testing:
    # figures from `python -m experiments.evaluate` on CASTELLA test
    R1@0.5: TODO
    R1@0.7: TODO
    mAP: TODO
# this submission: {num_queries} queries
"""


def write_submission(predictions_path: str | os.PathLike, blind_path: str | os.PathLike,
                     output_dir: str | os.PathLike, *, label: str = "Lastname_INST_task6_1"
                     ) -> dict[str, Path]:
    """Writes `<output_dir>/submission.jsonl` and `<output_dir>/system.meta.yaml`.

    Returns:
      {"submission": path, "meta": path}.
    """
    blind = read_annotations(blind_path)
    predictions = read_predictions(predictions_path)
    lines = submission_lines(blind, predictions, source=str(predictions_path))
    text = "".join(json.dumps({k: line[k] for k in SUBMISSION_KEYS}) + "\n" for line in lines)
    output_dir = Path(output_dir)
    submission = atomic_write_text(output_dir / SUBMISSION_FILE, text)
    meta = output_dir / META_FILE
    if not meta.exists():  # never overwrite what the user filled in
        atomic_write_text(meta, meta_skeleton(label, len(lines)))
    logging.info("submission: %d queries, %d windows", len(lines),
                 sum(len(line[PRED_FIELD]) for line in lines))
    return {"submission": submission, "meta": meta}
