"""Short saliency-peak proposals (DESIGN 9.5) and the proposal post-processing vs numpy."""

import functools

import jax
import numpy as np
import pytest

from amr_jax.detr.postprocess import postprocess_with_proposals
from amr_jax.detr.proposals import saliency_peak_proposals

PROPOSE = jax.jit(functools.partial(saliency_peak_proposals, num_peaks=3, coefficient=0.25,
                                    clip_length=1.0))


def numpy_proposals(s, n):
    """DESIGN 9.5 written out for one curve `s` with `n` valid frames: [(start, end, score)]."""
    s = np.asarray(s[:n], np.float64)
    lo, hi = s.min(), s.max()
    sh = (s - lo) / (hi - lo) if hi > lo else np.zeros(n)
    at = lambda t: sh[t] if 0 <= t < n else -np.inf  # noqa: E731
    peaks = [t for t in range(n) if sh[t] > at(t - 1) and sh[t] >= at(t + 1)]
    peaks = sorted(peaks, key=lambda t: (-sh[t], t))[:3]
    out = []
    for p in peaks:
        two = (p, p + 2) if at(p + 1) >= at(p - 1) else (p - 1, p + 1)
        out += [(p, p + 1, 0.25 * sh[p]), (*two, 0.25 * sh[p]), (p - 1, p + 2, 0.25 * sh[p])]
    return out


def test_hand_made_curve():
    # Valid frames 0..7: peaks at 1 (ŝ 1.0), 4 (0.6, right neighbour 0.5 > left 0.2),
    # 7 (edge, 0.8 > 0.0); frame 8+ is padding with a large value that must be ignored.
    s = np.array([[0.0, 1.0, 0.4, 0.2, 0.6, 0.5, 0.0, 0.8, 9.0, 9.0]], np.float32)
    mask = np.arange(10)[None] < 8
    start, end, score = (np.asarray(x)[0] for x in PROPOSE(s, mask))
    expected = [(1, 2, 0.25), (1, 3, 0.25), (0, 3, 0.25),          # [1,3]: ŝ_2 .4 >= ŝ_0 0
                (7, 8, 0.2), (6, 8, 0.2), (6, 9, 0.2),             # edge: right is -inf
                (4, 5, 0.15), (4, 6, 0.15), (3, 6, 0.15)]
    np.testing.assert_allclose(np.stack([start, end, score], -1), expected, atol=1e-6)
    np.testing.assert_allclose(np.stack([start, end, score], -1), numpy_proposals(s[0], 8),
                               atol=1e-6)


def test_random_curves_flat_curves_and_padding():
    rng = np.random.default_rng(0)
    b, t = 32, 24
    s = np.round(rng.normal(size=(b, t)), 1).astype(np.float32)    # ties between frames
    s[0] = 0.3                                                      # flat: ŝ = 0, one peak
    n = rng.integers(1, t + 1, b)
    n[0], n[1] = t, 2
    mask = np.arange(t)[None] < n[:, None]
    start, end, score = (np.asarray(x) for x in PROPOSE(s, mask))
    for i in range(b):
        ref = numpy_proposals(s[i], n[i])
        got = np.stack([start[i], end[i], score[i]], -1)
        np.testing.assert_allclose(got[:len(ref)], np.asarray(ref).reshape(-1, 3), atol=1e-6)
        assert (score[i, len(ref):] == -np.inf).all()
    np.testing.assert_allclose(np.stack([start[0], end[0], score[0]], -1)[:3],
                               [(0, 1, 0), (0, 2, 0), (-1, 2, 0)])
    # Padded equals unpadded: the same row with fewer padded frames gives the same proposals.
    short = PROPOSE(s[5:6, :n[5]], mask[5:6, :n[5]])
    for a, c in zip(short, (start[5:6], end[5:6], score[5:6])):
        np.testing.assert_array_equal(np.asarray(a), c)


def _iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def numpy_post(logits, spans, sal, n, duration, quality=None):
    """Union, clip to the duration, round to 1 s, greedy NMS 0.7, top 10 (DESIGN 9.5)."""
    p = np.exp(logits[:, 0]) / np.exp(logits).sum(-1)
    if quality is not None:
        p = p * quality ** 1.5
    cands = []
    for (c, w), sc in zip(spans, p):
        st, en = np.clip(np.round(np.array([c - w / 2, c + w / 2]) * duration, 4), 0, 300)
        cands.append((st, en, sc))
    cands += numpy_proposals(sal, n)
    cands = [(np.round(np.clip(a, 0, duration)), np.round(np.clip(b, 0, duration)), sc)
             for a, b, sc in cands]
    order = sorted(range(len(cands)), key=lambda i: (-cands[i][2], i))
    kept = []
    for i in order:
        if all(_iou(cands[i], cands[j]) <= 0.7 for j in kept):
            kept.append(i)
    return [cands[i] for i in kept[:10]]


@pytest.mark.parametrize("with_quality", [False, True])
def test_postprocess_with_proposals_matches_numpy(with_quality):
    rng = np.random.default_rng(1)
    b, q, t = 8, 10, 40
    logits = rng.normal(size=(b, q, 2)).astype(np.float32)
    spans = np.stack([rng.uniform(0.05, 0.95, (b, q)), rng.uniform(0.01, 0.3, (b, q))], -1)
    spans = spans.astype(np.float32)
    sal = rng.normal(size=(b, t)).astype(np.float32)
    n = rng.integers(5, t + 1, b)
    mask = np.arange(t)[None] < n[:, None]
    duration = (n - rng.uniform(0, 1, b)).astype(np.float32)       # not on the 1 s grid
    quality = rng.uniform(0.05, 1, (b, q)).astype(np.float32) if with_quality else None
    fn = jax.jit(functools.partial(postprocess_with_proposals, max_ts_val=300.0,
                                   clip_length=1.0, top_k=10, num_peaks=3, coefficient=0.25,
                                   nms_iou=0.7))
    windows, valid = (np.asarray(x) for x in fn(logits, spans, sal, mask, duration,
                                                 quality=quality))
    for i in range(b):
        ref = numpy_post(logits[i], spans[i], sal[i], n[i], duration[i],
                         None if quality is None else quality[i])
        k = len(ref)
        assert valid[i].sum() == k and valid[i, :k].all()
        np.testing.assert_allclose(windows[i, :k, :2], [r[:2] for r in ref], atol=1e-5)
        # Scores are rounded to 4 decimals (float32 vs float64 may differ by one unit).
        np.testing.assert_allclose(windows[i, :k, 2], [r[2] for r in ref], atol=1.01e-4)
        assert (windows[i, :k, 1] <= np.round(duration[i]) + 1e-6).all()
