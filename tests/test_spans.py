"""Span ops against brute-force Python implementations."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from amr_jax import spans

# Tenths of a second, like the annotations: exact in float32 and float64.
span = st.tuples(st.integers(0, 1000), st.integers(0, 500)).map(lambda t: (t[0] / 10, (t[0] + t[1]) / 10))


def brute_iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def brute_giou(a, b):
    hull = max(a[1], b[1]) - min(a[0], b[0])
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    iou = inter / union if union > 0 else 0.0
    return iou - ((hull - union) / hull if hull > 0 else 0.0)


@settings(max_examples=60, deadline=None)
@given(a=st.lists(span, min_size=1, max_size=5), b=st.lists(span, min_size=1, max_size=5))
def test_pairwise_iou_and_giou(a, b):
    an, bn = np.array(a, np.float64), np.array(b, np.float64)
    iou = np.asarray(spans.pairwise_iou(an, bn))
    giou = np.asarray(spans.pairwise_giou(an, bn))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            np.testing.assert_allclose(iou[i, j], brute_iou(x, y), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(giou[i, j], brute_giou(x, y), rtol=1e-4, atol=1e-5)
            assert -1 - 1e-5 <= giou[i, j] <= iou[i, j] + 1e-5


@settings(max_examples=40, deadline=None)
@given(a=span, b=span)
def test_paired_iou_hull_equals_true_iou_when_overlapping(a, b):
    got = float(spans.paired_iou(np.array(a), np.array(b)))
    if min(a[1], b[1]) > max(a[0], b[0]):
        np.testing.assert_allclose(got, brute_iou(a, b), rtol=1e-4, atol=1e-6)
    else:
        assert got == 0.0


def test_cxw_round_trip_and_clip():
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(0, 1, (4, 3, 2)), axis=-1)
    np.testing.assert_allclose(spans.cxw_to_xx(spans.xx_to_cxw(x)), x, atol=1e-6)
    np.testing.assert_allclose(spans.xx_to_cxw(np.array([2.0, 6.0])), [4.0, 4.0])
    clipped = spans.clip_spans(np.array([[-1.0, 5.0], [3.0, 12.0]]), 0.0, np.array([10.0, 10.0]))
    np.testing.assert_allclose(clipped, [[0, 5], [3, 10]])
