"""Scoring a predictions file and printing the result like the official scorer."""

from __future__ import annotations

import json
import os

from amr_jax.data.records import QueryRecord, read_annotations
from amr_jax.eval import metrics as metrics_lib
from amr_jax.eval.predictions import check_prediction_windows, read_predictions
from amr_jax.io_utils import atomic_write_text


def summary_json_line(metrics: dict) -> str:
    """The last stdout line of every scoring binary: the five brief figures."""
    return json.dumps(metrics_lib.brief(metrics))


def report_text(name: str, metrics: dict, by_length: dict[str, dict] | None = None) -> str:
    """Human-readable report: brief table, all thresholds, optional length breakdown."""
    parts = [metrics_lib.format_table({name: metrics}), "", metrics_lib.format_thresholds(metrics)]
    if by_length:
        parts += ["", metrics_lib.format_table(by_length, title="by ground-truth window length "
                                               "(queries with at least one window in the bin)")]
    return "\n".join(parts)


def score_predictions(records: list[QueryRecord], predictions: list[dict], *, name: str,
                      source: str, output: str | os.PathLike | None = None,
                      with_lengths: bool = True) -> dict:
    """Scores predictions, prints the report and the final JSON line, optionally saves JSON."""
    metrics = metrics_lib.compute_metrics(records, predictions, source=source)
    by_length = (metrics_lib.metrics_by_length(records, predictions, source=source)
                 if with_lengths else None)
    print(report_text(name, metrics, by_length))
    if output:
        payload = dict(metrics, by_length=by_length or {})
        atomic_write_text(output, json.dumps(payload, indent=2) + "\n")
    print(summary_json_line(metrics), flush=True)
    return metrics


def evaluate_files(gt_path: str | os.PathLike, pred_path: str | os.PathLike,
                   output: str | os.PathLike | None = None) -> dict:
    """Reads ground truth and predictions jsonl files and scores them."""
    records = read_annotations(gt_path)
    predictions = read_predictions(pred_path)
    check_prediction_windows(predictions, source=str(pred_path))
    return score_predictions(records, predictions, name=os.path.basename(str(pred_path)),
                             source=str(pred_path), output=output)
