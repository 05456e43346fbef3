"""Candidate-level boundary hard negatives vs a direct numpy transcription of eqs. (4)-(7)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amr_jax.detr import boundary
from amr_jax.detr.criterion import make_boundary_term
from amr_jax.detr.inputs import DetrTargets

FACTORS = tuple(0.1 * k for k in range(1, 13))
KW = dict(candidate_iou=(0.40, 0.75), negative_iou=(0.45, 0.75), margin=0.03,
          factors=boundary.boundary_factors(12, 0.1))


def _iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def _giou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    hull = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union - (hull - union) / hull


def _cxw(a):
    return np.array([(a[0] + a[1]) / 2, a[1] - a[0]])


def _dist(a, b):
    return np.abs(_cxw(a) - _cxw(b)).sum() + 1 - _giou(a, b)


def numpy_negatives(s, e):
    """{type: [kept (start, end)]} from the report's four error types (DESIGN 9.4)."""
    w = e - s
    out = {t: [] for t in boundary.NEGATIVE_TYPES}
    for f in FACTORS:
        cands = {"over_expansion": [(s - f * w / 2, e + f * w / 2)],
                 "under_coverage": [(s + f * w / 2, e - f * w / 2)],
                 "shift": [(s - f * w, e - f * w), (s + f * w, e + f * w)],
                 "single_boundary": [(s - f * w, e), (s + f * w, e), (s, e - f * w),
                                     (s, e + f * w)]}
        for t, lst in cands.items():
            for a, b in lst:
                a, b = min(max(a, 0.0), 1.0), min(max(b, 0.0), 1.0)
                if b > a and 0.45 <= _iou((a, b), (s, e)) <= 0.75:
                    out[t].append((a, b))
    return out


def numpy_boundary_loss(pred_cxw, logits, gts, eps=0.05, margin=0.03):
    """Eqs. (4)-(7) written out: pred_cxw [B][Q] (c, w), logits [B][Q] (2,), gts [B] list of
    (s, e) normalized."""
    losses, weights = [], []
    for b in range(len(pred_cxw)):
        for i in range(len(pred_cxw[b])):
            c, w = pred_cxw[b][i]
            pred = (c - w / 2, c + w / 2)
            if not gts[b]:
                continue
            ious = [_iou(pred, g) for g in gts[b]]
            g = gts[b][int(np.argmax(ious))]                         # eq. (4)
            if not 0.40 <= max(ious) <= 0.75:                        # eq. (5)
                continue
            per_type = []
            for negs in numpy_negatives(*g).values():
                if negs:
                    per_type.append(np.mean([max(0.0, margin + _dist(pred, g) - _dist(n, g))
                                             for n in negs]))        # eq. (6)
            if not per_type:
                continue
            p = np.exp(logits[b][i][0]) / np.exp(logits[b][i]).sum()
            losses.append(np.mean(per_type))
            weights.append(max(p, eps))
    if not losses:
        return 0.0
    w = np.array(weights) / np.mean(weights)                         # eq. (7)
    return float(np.mean(w * np.array(losses)))


def _targets(gts, w):
    b = len(gts)
    spans = np.zeros((b, w, 2), np.float32)
    mask = np.zeros((b, w), bool)
    for i, g in enumerate(gts):
        for j, (s, e) in enumerate(g):
            spans[i, j] = [(s + e) / 2, e - s]
            mask[i, j] = True
    z = np.zeros((b, 2), np.int32)
    return DetrTargets(spans=spans, span_mask=mask, saliency_pos=z, saliency_neg=z,
                       saliency_labels=np.zeros((b, 4), np.float32))


# Hand-made batch: query 0 has GT [0.2, 0.6] and [0.7, 0.9]; query 1 GT [0.0, 0.3].
GTS = [[(0.2, 0.6), (0.7, 0.9)], [(0.0, 0.3)]]
PRED = np.array([[[0.5, 0.4], [0.8, 0.2], [0.78, 0.1], [0.1, 0.05]],    # IoU .6, 1, .5, 0
                 [[0.2, 0.3], [0.35, 0.2], [0.9, 0.1], [0.15, 0.3]]],   # 5/7, 1/9, 0, 1
                np.float32)
LOGITS = np.array([[[1.0, 0.0], [0.0, 1.0], [-2.0, 1.0], [0.0, 0.0]],
                   [[0.5, 0.0], [2.0, 0.0], [0.0, 0.0], [3.0, 0.0]]], np.float32)
# numpy_boundary_loss(PRED, LOGITS, GTS), evaluated once and written down.
EXPECTED = 0.01936206


@jax.jit
def _term(pred, logits, targets):
    term = make_boundary_term(eps=0.05, **KW)
    return term({"pred_spans": pred, "pred_logits": logits}, targets, None)


def test_hand_made_case_matches_numpy_transcription():
    ref = numpy_boundary_loss(PRED.tolist(), LOGITS.tolist(), GTS)
    assert ref == pytest.approx(EXPECTED, abs=1e-6)
    assert float(_term(PRED, LOGITS, _targets(GTS, 3))) == pytest.approx(EXPECTED, abs=1e-5)


def test_random_cases_match_numpy_transcription():
    rng = np.random.default_rng(0)
    for trial in range(4):
        b, q, w = 3, 8, 3
        gts = []
        for _ in range(b):
            k = int(rng.integers(1, w + 1))
            s = rng.uniform(0, 0.8, k)
            gts.append([(float(a), float(min(1.0, a + rng.uniform(0.02, 0.5)))) for a in s])
        # Candidates near the GT windows so that many qualify.
        pred = np.zeros((b, q, 2), np.float32)
        for i in range(b):
            for j in range(q):
                s, e = gts[i][j % len(gts[i])]
                c = (s + e) / 2 + rng.normal(0, 0.3) * (e - s)
                width = (e - s) * rng.uniform(0.5, 1.6)
                pred[i, j] = [c, width]
        logits = rng.normal(size=(b, q, 2)).astype(np.float32)
        ours = float(_term(pred, logits, _targets(gts, w)))
        ref = numpy_boundary_loss(pred.tolist(), logits.tolist(), gts)
        assert ours == pytest.approx(ref, rel=1e-4, abs=1e-6), trial


@given(st.floats(0.0, 0.98), st.floats(0.005, 1.0))
def test_every_kept_negative_has_iou_in_range(start, width):
    end = min(1.0, start + width)
    gt = jnp.array([start, end], jnp.float32)
    negatives, valid = boundary.boundary_negatives(gt, factors=KW["factors"], iou_low=0.45,
                                                   iou_high=0.75)
    negatives, valid = np.asarray(negatives, np.float64), np.asarray(valid)
    assert negatives.shape == (96, 2)
    for (a, b), keep in zip(negatives, valid):
        if keep:
            assert 0.0 <= a < b <= 1.0
            assert 0.45 - 1e-5 <= _iou((a, b), (start, end)) <= 0.75 + 1e-5
    # Same kept negatives, per type, as the numpy transcription.
    types = boundary.negative_types(12)
    ref = numpy_negatives(start, end)
    for t, name in enumerate(boundary.NEGATIVE_TYPES):
        ours = negatives[(types == t) & valid]
        # float32 vs float64 can flip a negative sitting on the IoU bounds; allow none here
        # by comparing away from them.
        far = [n for n in ref[name] if min(abs(_iou(n, (start, end)) - 0.45),
                                           abs(_iou(n, (start, end)) - 0.75)) > 1e-4]
        for n in far:
            assert np.min(np.abs(ours - np.array(n)).max(-1)) < 1e-5, (name, n)
        assert len(ours) >= len(far)


def test_perfect_prediction_nothing_qualifying_and_padding():
    targets = _targets(GTS, 3)
    # Every candidate exactly on a GT window: IoU 1 > 0.75, nothing qualifies -> exactly 0.
    perfect = np.array([[[0.4, 0.4], [0.8, 0.2], [0.4, 0.4], [0.8, 0.2]],
                        [[0.15, 0.3]] * 4], np.float32)
    assert float(_term(perfect, LOGITS, targets)) == 0.0
    # Nothing qualifies at all (candidates far from every window): 0, not NaN, finite grad.
    far = np.tile(np.array([[[0.97, 0.02]]], np.float32), (2, 4, 1))
    value, grad = jax.value_and_grad(lambda p: _term(p, LOGITS, targets))(jnp.asarray(far))
    assert float(value) == 0.0 and np.isfinite(np.asarray(grad)).all()
    # Padded target slots carry garbage without changing anything; a query without any
    # target (a padded row) contributes nothing.
    garbage = _targets(GTS, 3)
    spans = np.array(garbage.spans)
    spans[1, 1:] = [[0.3, 0.25], [0.2, 0.3]]
    garbage = garbage.replace(spans=spans)
    assert float(_term(PRED, LOGITS, garbage)) == pytest.approx(EXPECTED, abs=1e-5)
    extra = _targets(GTS + [[]], 3)
    pred3 = np.concatenate([PRED, PRED[:1]], 0)
    logits3 = np.concatenate([LOGITS, LOGITS[:1]], 0)
    assert float(_term(pred3, logits3, extra)) == pytest.approx(EXPECTED, abs=1e-5)


def test_gradients_flow_through_the_candidate_only():
    targets = _targets(GTS, 3)
    grads = jax.grad(lambda p, lg: _term(p, lg, targets), argnums=(0, 1))(
        jnp.asarray(PRED), jnp.asarray(LOGITS))
    g_spans, g_logits = (np.asarray(g) for g in grads)
    assert np.isfinite(g_spans).all()
    np.testing.assert_array_equal(g_logits, 0.0)   # p_fg is detached (eq. 7)
    # Non-qualifying candidates (IoU 1, 0, 1/9, 0, 1) get no gradient; qualifying ones
    # whose hinge is active do.
    per_candidate = jax.jit(functools.partial(boundary.boundary_candidate_losses, **KW))
    loss, qualifies = per_candidate(PRED, targets.spans, targets.span_mask)
    np.testing.assert_array_equal(np.asarray(qualifies), [[1, 0, 1, 0], [1, 0, 0, 0]])
    active = np.asarray(loss) > 0
    assert active[0, 0] and active[0, 2]
    np.testing.assert_array_equal(np.abs(g_spans).sum(-1) > 0, active)
