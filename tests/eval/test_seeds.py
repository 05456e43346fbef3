"""Per-query scores, seed summaries and the bootstrap interval over queries."""

import numpy as np
import pytest

from amr_jax.data.records import read_annotations
from amr_jax.eval import metrics, seeds
from amr_jax.eval.predictions import read_predictions


@pytest.fixture(scope="module")
def reference(shared_data):
    folder = shared_data / "reference_preds"
    pred = sorted(folder.glob("*val*.jsonl"))[0]
    ann = shared_data / "castella" / "castella_val_release.jsonl"
    return read_annotations(ann), read_predictions(pred)


def test_per_query_scores_reproduce_the_official_figures(reference):
    records, preds = reference
    scores = metrics.per_query_scores(records, preds)
    assert scores["r1_iou"].shape == (len(scores["rows"]),)
    assert metrics.metrics_from_scores(scores["r1_iou"], scores["ap"]) == metrics.compute_metrics(
        records, preds)
    assert metrics.compute_metrics(records, preds)["brief"]["R1@0.7"] == 16.19


def test_bootstrap_matches_the_normal_approximation_for_r1():
    rng = np.random.default_rng(1)
    n = 2000
    r1_iou = rng.uniform(0, 1, n)                      # P(iou >= 0.5) = 0.5
    ap = rng.uniform(0, 1, (n, 10))
    low, high = metrics.bootstrap_interval([(r1_iou, ap)], num_resamples=2000)["R1@0.5"]
    p = np.mean(r1_iou >= 0.5)
    half = 1.96 * np.sqrt(p * (1 - p) / n) * 100
    assert low < p * 100 < high
    assert abs((high - low) / 2 - half) < 0.15 * half
    # Identical queries: no spread at all.
    same = metrics.bootstrap_interval([(np.full(50, 0.8), np.full((50, 10), 0.3))], num_resamples=50)
    assert same["R1@0.7"] == (100.0, 100.0) and same["mAP"] == pytest.approx((30.0, 30.0))


def test_summary_mean_and_std_over_runs(reference):
    records, preds = reference
    rng = np.random.default_rng(0)
    runs, briefs = [], []
    for k in range(3):  # three "seeds": the reference predictions with jittered scores
        jittered = [dict(p, pred_relevant_windows=[[w[0], w[1], w[2] + rng.normal(0, 0.05)]
                                                   for w in p["pred_relevant_windows"]])
                    for p in preds]
        runs.append(metrics.per_query_scores(records, jittered))
        briefs.append(metrics.compute_metrics(records, jittered)["brief"])
    summary = seeds.summarize_runs(runs, num_resamples=200)
    for key in metrics.BRIEF_KEYS:
        values = np.asarray([b[key] for b in briefs])
        assert summary["mean"][key] == pytest.approx(values.mean(), abs=0.006)
        assert summary["std"][key] == pytest.approx(values.std(ddof=1), abs=0.006)
        low, high = summary["ci95"][key]
        assert low <= summary["mean"][key] <= high
    table = seeds.format_summary({"baseline": summary})
    assert "| baseline | 3 |" in table
