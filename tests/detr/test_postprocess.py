"""Post-processing vs a plain numpy version of the reference PostProcessorDETR."""

import numpy as np
import pytest

from amr_jax.detr.postprocess import postprocess


def _reference(logits, spans, duration, max_ts_val, clip_length, top_k):
    out = []
    for lg, sp, d in zip(logits, spans, duration):
        p = np.exp(lg - lg.max(-1, keepdims=True))
        score = (p / p.sum(-1, keepdims=True))[:, 0]
        xx = np.stack([sp[:, 0] - sp[:, 1] / 2, sp[:, 0] + sp[:, 1] / 2], -1) * d
        order = np.argsort(-score, kind="stable")
        rows = np.concatenate([np.round(xx[order], 4), np.round(score[order], 4)[:, None]], -1)
        rows[:, :2] = np.round(np.clip(rows[:, :2], 0, max_ts_val) / clip_length) * clip_length
        out.append(rows[:top_k])
    return np.stack(out)


def test_matches_reference():
    rng = np.random.default_rng(0)
    b, q = 5, 10
    logits = rng.normal(size=(b, q, 2)).astype(np.float32)
    spans = np.stack([rng.uniform(-0.1, 1.1, (b, q)), rng.uniform(0.0, 0.8, (b, q))], -1)
    spans = spans.astype(np.float32)
    duration = np.array([60.0, 300.0, 299.0, 450.0, 12.0], np.float32)
    windows, valid = postprocess(logits, spans, duration, max_ts_val=300.0, clip_length=1.0,
                                 top_k=10)
    ref = _reference(logits, spans, duration, 300.0, 1.0, 10)
    np.testing.assert_allclose(np.asarray(windows), ref, atol=1e-4)
    assert np.asarray(valid).all()
    w = np.asarray(windows)
    assert (np.diff(w[..., 2], axis=1) <= 0).all()           # best first
    assert (w[..., :2] >= 0).all() and (w[..., :2] <= 300).all()
    np.testing.assert_array_equal(w[..., :2], np.round(w[..., :2]))  # 1 s grid


def test_fewer_queries_than_top_k_are_padded_invalid():
    logits = np.zeros((2, 3, 2), np.float32)
    spans = np.full((2, 3, 2), 0.5, np.float32)
    windows, valid = postprocess(logits, spans, np.array([10.0, 20.0]), max_ts_val=300.0,
                                 clip_length=1.0, top_k=10)
    assert windows.shape == (2, 10, 3)
    np.testing.assert_array_equal(np.asarray(valid), np.arange(10)[None].repeat(2, 0) < 3)


@pytest.mark.parametrize("clip_length", [2.0])
def test_rounds_to_the_clip_grid(clip_length):
    logits = np.array([[[2.0, 0.0]]], np.float32)
    spans = np.array([[[0.5, 0.3]]], np.float32)  # 100 s -> [35, 65] -> grid of 2 s: [36, 64]
    windows, _ = postprocess(logits, spans, np.array([100.0]), max_ts_val=300.0,
                             clip_length=clip_length, top_k=1)
    np.testing.assert_allclose(np.asarray(windows)[0, 0, :2], [36.0, 64.0])
