"""Hungarian matching on device vs scipy.optimize.linear_sum_assignment."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from amr_jax.detr import matcher

B, Q, W = 6, 10, 5


@pytest.fixture(scope="module")
def random_problem():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(B, Q, 2)).astype(np.float32)
    spans = np.stack([rng.uniform(0.1, 0.9, (B, Q)), rng.uniform(0.02, 0.5, (B, Q))], -1)
    tgt = np.stack([rng.uniform(0.1, 0.9, (B, W)), rng.uniform(0.02, 0.5, (B, W))], -1)
    num = np.array([1, 2, 5, 3, 4, 5])
    mask = np.arange(W)[None] < num[:, None]
    tgt = np.where(mask[..., None], tgt, 0.0)  # padded rows are zeros, as the pipeline writes
    return logits, spans.astype(np.float32), tgt.astype(np.float32), mask


def _reference_cost(logits, spans, tgt):
    """lighthouse HungarianMatcher cost for one sample, in numpy float64."""
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    l1 = np.abs(spans[:, None] - tgt[None]).sum(-1)
    a = np.stack([spans[:, 0] - spans[:, 1] / 2, spans[:, 0] + spans[:, 1] / 2], -1)
    b = np.stack([tgt[:, 0] - tgt[:, 1] / 2, tgt[:, 0] + tgt[:, 1] / 2], -1)
    inter = np.clip(np.minimum(a[:, None, 1], b[None, :, 1])
                    - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None] - inter
    hull = np.maximum(a[:, None, 1], b[None, :, 1]) - np.minimum(a[:, None, 0], b[None, :, 0])
    giou = inter / union - (hull - union) / hull
    return 10 * l1 - giou - 4 * p[:, 0:1]


def test_matching_total_cost_equals_scipy(random_problem):
    logits, spans, tgt, mask = random_problem
    m = jax.jit(lambda *a: matcher.hungarian_match(*a, cost_span=10.0, cost_giou=1.0,
                                                   cost_class=4.0))(logits, spans, tgt, mask)
    src = np.asarray(m.src_for_target)
    for b in range(B):
        k = mask[b].sum()
        cost = _reference_cost(logits[b], spans[b], tgt[b, :k])
        rows, cols = linear_sum_assignment(cost)
        ours = cost[src[b, :k], np.arange(k)].sum()
        assert ours == pytest.approx(cost[rows, cols].sum(), abs=1e-4)
        assert len(set(src[b, :k].tolist())) == k  # one query per target
        expected_matched = np.zeros(Q, bool)
        expected_matched[src[b, :k]] = True
        np.testing.assert_array_equal(np.asarray(m.query_matched[b]), expected_matched)


def test_random_costs_with_padding_match_scipy():
    """The assignment kernel alone on random cost matrices with padded columns."""
    rng = np.random.default_rng(1)
    cost = rng.normal(size=(8, Q, W)).astype(np.float32) * 5
    num = rng.integers(1, W + 1, size=8)
    mask = np.arange(W)[None] < num[:, None]
    padded = jnp.where(jnp.asarray(mask)[:, None, :], cost, matcher.PAD_COST)
    src = np.asarray(jax.jit(matcher.assign)(padded))
    for b in range(8):
        k = num[b]
        rows, cols = linear_sum_assignment(cost[b, :, :k])
        assert cost[b, src[b, :k], np.arange(k)].sum() == pytest.approx(
            cost[b][rows, cols].sum(), abs=1e-4)


def test_cost_is_finite_with_nan_predictions(random_problem):
    logits, spans, tgt, mask = random_problem
    spans = spans.copy()
    spans[0, 3] = np.nan
    logits = logits.copy()
    logits[1, 2, 0] = np.inf
    cost = matcher.match_cost(logits, spans, tgt, mask, cost_span=10.0, cost_giou=1.0,
                              cost_class=4.0)
    assert np.isfinite(np.asarray(cost)).all()
    np.testing.assert_array_equal(np.asarray(cost)[~np.broadcast_to(mask[:, None, :], cost.shape)],
                                  matcher.PAD_COST)


def test_fewer_queries_than_targets_raises():
    with pytest.raises(ValueError, match="at least as many queries"):
        matcher.assign(jnp.zeros((1, 3, 5)))
