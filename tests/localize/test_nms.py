"""Jittable greedy temporal NMS vs a brute-force greedy NMS written here."""

import functools

import jax
import numpy as np
import pytest

from amr_jax.localize.nms import nms_keep, nms_top_windows


def brute_force_nms(start, end, score, threshold, k):
    """Python greedy NMS of one row: visit by score (ties: lower index), drop IoU > threshold."""
    cands = [i for i in range(len(score)) if score[i] > -np.inf]
    cands.sort(key=lambda i: (-score[i], i))
    kept = []
    for i in cands:
        ok = True
        for j in kept:
            inter = max(0.0, min(end[i], end[j]) - max(start[i], start[j]))
            union = (end[i] - start[i]) + (end[j] - start[j]) - inter
            if union > 0 and inter / union > threshold:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept[:k]


@pytest.mark.parametrize("threshold", [0.7, 0.5, 0.0])
def test_matches_brute_force_with_ties(threshold):
    rng = np.random.default_rng(int(threshold * 10))
    b, c, k = 64, 19, 10
    # Integer windows and scores from a small set: many tied scores, identical windows,
    # and IoUs exactly at the threshold (e.g. [0, 2] vs [0, 4] at 0.5).
    start = rng.integers(0, 12, (b, c)).astype(np.float32)
    end = start + rng.integers(0, 5, (b, c)).astype(np.float32)   # some zero-length
    score = rng.choice([0.1, 0.25, 0.5, 0.9], (b, c)).astype(np.float32)
    score[rng.uniform(size=(b, c)) < 0.15] = -np.inf               # absent candidates
    fn = jax.jit(functools.partial(nms_top_windows, iou_threshold=threshold, num_windows=k))
    windows, valid = (np.asarray(x) for x in fn(start, end, score))
    keep = np.asarray(jax.jit(functools.partial(nms_keep, iou_threshold=threshold))(
        start, end, score))
    for row in range(b):
        ref = brute_force_nms(start[row], end[row], score[row], threshold, k)
        n = len(ref)
        assert valid[row].sum() == n and valid[row, :n].all()
        np.testing.assert_array_equal(windows[row, :n, 0], start[row, ref])
        np.testing.assert_array_equal(windows[row, :n, 1], end[row, ref])
        np.testing.assert_array_equal(windows[row, :n, 2], score[row, ref])
        assert (windows[row, n:] == 0).all()
        full = brute_force_nms(start[row], end[row], score[row], threshold, c)
        np.testing.assert_array_equal(np.flatnonzero(keep[row]), sorted(full))


def test_iou_at_threshold_is_kept_and_above_is_suppressed():
    start = np.array([[0.0, 0.0, 0.0]], np.float32)
    end = np.array([[4.0, 2.0, 3.0]], np.float32)                   # IoU 0.5 and 0.75 with #0
    score = np.array([[0.9, 0.8, 0.7]], np.float32)
    keep = np.asarray(nms_keep(start, end, score, iou_threshold=0.5))
    np.testing.assert_array_equal(keep, [[True, True, False]])
