"""Aggregating runs over seeds: mean +- std per figure and a bootstrap interval over queries.

The official baseline's R1@0.7 moves by about 1.5 points between seeds (REFERENCE_NOTES,
section 3), so one run says little; `summarize_runs` gives, per brief figure, the mean and
sample std over runs and a 95% bootstrap interval over queries of the run mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from amr_jax.eval import metrics as metrics_lib


def summarize_runs(runs: Sequence[dict], *, num_resamples: int = 1000, seed: int = 0) -> dict:
    """Summarizes runs scored on the same queries.

    Args:
      runs: per run, `metrics.per_query_scores(...)` (same records for every run).
      num_resamples, seed: of the bootstrap over queries.

    Returns:
      {"num_runs", "num_queries", "per_run": [brief dict], "mean": {key: x},
       "std": {key: x} (sample std, ddof=1; 0 for one run), "ci95": {key: (low, high)}}.
    """
    per_run = [metrics_lib.metrics_from_scores(r["r1_iou"], r["ap"])["brief"] for r in runs]
    values = np.asarray([[b[k] for k in metrics_lib.BRIEF_KEYS] for b in per_run])
    std = values.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(values.shape[1])
    interval = metrics_lib.bootstrap_interval([(r["r1_iou"], r["ap"]) for r in runs],
                                              num_resamples=num_resamples, seed=seed)
    return {"num_runs": len(runs), "num_queries": int(len(runs[0]["r1_iou"])),
            "per_run": per_run,
            "mean": {k: round(float(v), 2) for k, v in zip(metrics_lib.BRIEF_KEYS, values.mean(0))},
            "std": {k: round(float(v), 2) for k, v in zip(metrics_lib.BRIEF_KEYS, std)},
            "ci95": {k: (round(lo, 2), round(hi, 2)) for k, (lo, hi) in interval.items()}}


def format_summary(rows: dict[str, dict], *, title: str = "") -> str:
    """Markdown table: one row per system, `mean +- std [low, high]` per figure."""
    head = "| system | runs | " + " | ".join(metrics_lib.BRIEF_KEYS) + " |"
    lines = ([f"{title}", ""] if title else []) + [head, "|" + "---|" * (len(metrics_lib.BRIEF_KEYS) + 2)]
    for name, s in rows.items():
        cells = [f"{s['mean'][k]:.2f} ± {s['std'][k]:.2f} [{s['ci95'][k][0]:.1f}, {s['ci95'][k][1]:.1f}]"
                 for k in metrics_lib.BRIEF_KEYS]
        lines.append(f"| {name} | {s['num_runs']} | " + " | ".join(cells) + " |")
    lines += ["", "mean ± sample std over runs [95% bootstrap interval over queries of the run mean]"]
    return "\n".join(lines)
