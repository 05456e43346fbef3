"""Vectorized metrics against a literal per-query implementation on random data."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from amr_jax.data.records import parse_record
from amr_jax.eval.metrics import compute_metrics, metrics_by_length, LENGTH_RANGES

from official_reference import official_metrics


def _random_split(rng, num_queries, integer):
    records, preds, gt_map, pred_map = [], [], {}, {}
    for q in range(num_queries):
        duration = float(rng.integers(20, 120))
        gts = []
        for _ in range(int(rng.integers(1, 14))):
            st_ = rng.uniform(0, duration - 1)
            en = st_ + rng.exponential(8) + (0 if integer else 0.05)
            gts.append([float(np.floor(st_)), float(np.ceil(en))] if integer else [st_, en])
        if rng.random() < 0.1:
            gts.append([5.0, 5.0])  # zero length: dropped by the length filter
        wins = []
        for _ in range(int(rng.integers(0, 13))):
            st_ = rng.uniform(0, duration)
            en = st_ + rng.exponential(8)
            if integer:
                st_, en = float(np.round(st_)), float(np.round(en))
            # Scores with ties exercise the stable sort.
            wins.append([st_, en, float(np.round(rng.random(), 1))])
        if rng.random() < 0.3 and wins:  # exact copies of GT windows create IoU ties
            wins[0][:2] = gts[0]
        qid = f"q{q}"
        records.append(parse_record({"qid": qid, "query": "x", "duration": duration, "vid": "v",
                                     "relevant_windows": gts}, where="test"))
        preds.append({"qid": qid, "pred_relevant_windows": wins})
        gt_map[qid] = gts
        pred_map[qid] = wins
    return records, preds, gt_map, pred_map


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), integer=st.booleans())
def test_matches_literal_implementation(seed, integer):
    rng = np.random.default_rng(seed)
    records, preds, gt_map, pred_map = _random_split(rng, 40, integer)
    got = compute_metrics(records, preds)
    want = official_metrics(gt_map, pred_map)
    assert got["R1"] == want["R1"]
    assert got["mAP"] == want["mAP"]


def test_length_breakdown_matches_literal_implementation():
    rng = np.random.default_rng(3)
    records, preds, gt_map, pred_map = _random_split(rng, 60, True)
    by_length = metrics_by_length(records, preds)
    for name, (lo, hi) in LENGTH_RANGES.items():
        want = official_metrics(gt_map, pred_map, lo, hi)
        assert by_length[name]["mAP"] == want["mAP"], name
        assert by_length[name]["R1"] == want["R1"], name


def test_perfect_predictions_score_100_and_order_matters():
    rng = np.random.default_rng(0)
    records, _, gt_map, _ = _random_split(rng, 30, True)
    perfect = [{"qid": r.qid, "pred_relevant_windows": [[*w, 1.0 - 0.01 * i] for i, w in
                                                         enumerate(r.raw_windows.tolist()[:10])
                                                         if w[1] > w[0]]} for r in records]
    m = compute_metrics(records, perfect)
    assert m["R1"]["0.95"] == 100.0
    # Only queries with <= 10 GT windows can reach AP 1 (predictions are cut to 10).
    full = np.mean([len([w for w in r.raw_windows if w[1] > w[0]]) <= 10 for r in records])
    assert m["mAP"]["0.95"] >= 100 * full - 1e-9
    # R1 reads the first listed window: putting a wrong window first breaks it,
    # while mAP re-sorts by score and is unchanged.
    shuffled = [{"qid": p["qid"], "pred_relevant_windows": [[1000.0, 1001.0, 0.0]] +
                 p["pred_relevant_windows"]} for p in perfect]
    m2 = compute_metrics(records, shuffled)
    assert m2["R1"]["0.5"] == 0.0
    assert m2["mAP"]["0.5"] > 0.0
