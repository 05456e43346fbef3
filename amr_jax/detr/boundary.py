"""Candidate-level boundary hard negatives (seed 003, eqs. (4)-(7); DESIGN 9.4).

For every predicted window Ŵ_i of the final decoder layer:

  * W*_i = the query's ground-truth window of highest IoU with Ŵ_i (eq. 4);
    the candidate qualifies when 0.40 <= IoU(Ŵ_i, W*_i) <= 0.75 (eq. 5) and at
    least one negative of W*_i is kept (pinned: a candidate with nothing to be
    contrasted against is not counted in N_bd);
  * negatives are built from W* = [s, e] of width w, for every factor f of a
    fixed list (0.1, 0.2, ..., 1.2), as four boundary-error types with a fixed
    number of slots each (static shapes):
      over-expansion   [s - f w/2, e + f w/2]                    (F slots)
      under-coverage   [s + f w/2, e - f w/2]                    (F)
      shift            [s - f w, e - f w], [s + f w, e + f w]    (2F)
      single boundary  [s - f w, e], [s + f w, e],
                       [s, e - f w], [s, e + f w]                (4F)
    clipped to [0, 1], dropped when empty, kept when 0.45 <= IoU(W-, W*) <= 0.75
    (the IoU filter selects which factors survive);
  * d(A, B) = ||cxw(A) - cxw(B)||_1 + (1 - gIoU(A, B)) on normalized spans;
    L_bd(i, W-) = max(0, m + d(Ŵ_i, W*) - d(W-, W*)) with m = 0.03 (eq. 6),
    the gradient flowing through Ŵ_i only;
  * L_bd(i) = mean over the kept negatives of each type, then mean over the
    types that kept any;
  * L_boundary = sum_i w_i L_bd(i) / N_bd with w_i = max(p_i, eps) /
    mean_j max(p_j, eps) over the N_bd qualifying candidates of the whole
    batch, p the detached foreground probability, eps = 0.05 (eq. 7);
    0 (not NaN) when nothing qualifies.

IoU here is the true-union temporal IoU on normalized (start, end).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from amr_jax import spans as span_ops
from amr_jax.detr.matcher import safe_target_spans

NEGATIVE_TYPES = ("over_expansion", "under_coverage", "shift", "single_boundary")


def boundary_factors(num_factors: int, step: float) -> tuple[float, ...]:
    """The factor list `step, 2 step, ..., num_factors * step` (DESIGN: 0.1 .. 1.2)."""
    return tuple(round(step * k, 10) for k in range(1, num_factors + 1))


def negative_types(num_factors: int) -> np.ndarray:
    """[N] int type index (into NEGATIVE_TYPES) of each negative slot, N = 8 * num_factors."""
    return np.repeat(np.arange(4), np.array([1, 1, 2, 4]) * num_factors)


def boundary_negatives(gt_xx: jax.Array, *, factors: tuple[float, ...], iou_low: float,
                       iou_high: float) -> tuple[jax.Array, jax.Array]:
    """Boundary-error negatives of every ground-truth window.

    Args:
      gt_xx: [..., 2] ground-truth windows, normalized (start, end).
      factors: the F displacement factors f (fractions of the width).
      iou_low, iou_high: a negative is kept when its IoU with the window lies in
        [iou_low, iou_high] (both inclusive).

    Returns:
      negatives [..., N, 2] normalized (start, end), N = 8F, slots ordered as
      `negative_types(F)` (within a type: the displacement patterns in the order
      of the module docstring, each over all factors); valid [..., N] bool,
      False for empty or filtered-out slots.
    """
    f = jnp.asarray(factors, gt_xx.dtype)                         # [F]
    s, e = gt_xx[..., 0:1], gt_xx[..., 1:2]                       # [..., 1]
    d = (e - s) * f                                               # [..., F] = f w
    half = 0.5 * d
    patterns = [
        (s - half, e + half),                                     # over-expansion
        (s + half, e - half),                                     # under-coverage
        (s - d, e - d), (s + d, e + d),                           # shift
        (s - d, e + 0 * d), (s + d, e + 0 * d),                   # start offset
        (s + 0 * d, e - d), (s + 0 * d, e + d),                   # end offset
    ]
    start = jnp.concatenate([p[0] for p in patterns], axis=-1)    # [..., N]
    end = jnp.concatenate([p[1] for p in patterns], axis=-1)
    start, end = jnp.clip(start, 0.0, 1.0), jnp.clip(end, 0.0, 1.0)
    negatives = jnp.stack([start, end], axis=-1)                  # [..., N, 2]
    iou = span_ops.pairwise_iou(negatives, gt_xx[..., None, :])[..., 0]
    valid = (end > start) & (iou >= iou_low) & (iou <= iou_high)
    return negatives, valid


def span_distance(a_cxw: jax.Array, b_cxw: jax.Array) -> jax.Array:
    """d(A, B) = ||A - B||_1 (center, width) + 1 - gIoU(A, B): [..., 2] x [..., 2] -> [...]."""
    l1 = jnp.abs(a_cxw - b_cxw).sum(axis=-1)
    giou = span_ops.pairwise_giou(span_ops.cxw_to_xx(a_cxw)[..., None, :],
                                  span_ops.cxw_to_xx(b_cxw)[..., None, :])[..., 0, 0]
    return l1 + 1.0 - giou


def boundary_candidate_losses(pred_spans: jax.Array, tgt_spans: jax.Array, tgt_mask: jax.Array,
                              *, candidate_iou: tuple[float, float],
                              negative_iou: tuple[float, float], margin: float,
                              factors: tuple[float, ...]) -> tuple[jax.Array, jax.Array]:
    """Per-candidate boundary loss L_bd(i) (eqs. 4-6, type-balanced).

    Args:
      pred_spans: [B, Q, 2] predicted normalized (center, width).
      tgt_spans: [B, W, 2] targets, normalized (center, width), padded.
      tgt_mask: [B, W] bool, True on real targets.
      candidate_iou: (low, high) inclusive best-GT IoU range of a candidate.
      negative_iou: (low, high) inclusive IoU range of a kept negative.
      margin: m.
      factors: displacement factors.

    Returns:
      loss [B, Q] (0 where not qualifying) and qualifies [B, Q] bool.
    """
    tgt = safe_target_spans(tgt_spans, tgt_mask)
    tgt_xx = span_ops.cxw_to_xx(tgt)                                           # [B, W, 2]
    pred_xx = jax.lax.stop_gradient(span_ops.cxw_to_xx(pred_spans))
    iou = span_ops.pairwise_iou(pred_xx, tgt_xx)                               # [B, Q, W]
    iou = jnp.where(tgt_mask[:, None, :], iou, -1.0)
    best = jnp.argmax(iou, axis=-1)                                            # [B, Q]
    best_iou = jnp.max(iou, axis=-1)

    negatives, valid = boundary_negatives(tgt_xx, factors=factors, iou_low=negative_iou[0],
                                          iou_high=negative_iou[1])            # [B, W, N, *]
    d_neg = span_distance(span_ops.xx_to_cxw(negatives), tgt[:, :, None, :])   # [B, W, N]
    d_neg = jnp.take_along_axis(d_neg, best[..., None], axis=1)                # [B, Q, N]
    valid = jnp.take_along_axis(valid, best[..., None], axis=1)
    gt_star = jnp.take_along_axis(tgt, best[..., None], axis=1)                # [B, Q, 2]
    d_pred = span_distance(pred_spans, gt_star)                                # [B, Q]
    hinge = jnp.maximum(margin + d_pred[..., None] - d_neg, 0.0)
    hinge = jnp.where(valid, hinge, 0.0)

    types = jax.nn.one_hot(negative_types(len(factors)), len(NEGATIVE_TYPES),
                           dtype=hinge.dtype)                                  # [N, 4]
    type_sum = hinge @ types                                                   # [B, Q, 4]
    type_count = valid.astype(hinge.dtype) @ types
    has_type = type_count > 0
    type_mean = type_sum / jnp.maximum(type_count, 1.0)
    num_types = has_type.sum(axis=-1)
    loss = jnp.where(has_type, type_mean, 0.0).sum(axis=-1) / jnp.maximum(num_types, 1)
    qualifies = ((best_iou >= candidate_iou[0]) & (best_iou <= candidate_iou[1])
                 & (num_types > 0) & tgt_mask.any(axis=-1, keepdims=True))
    return jnp.where(qualifies, loss, 0.0), qualifies


def score_weighted_mean(loss: jax.Array, qualifies: jax.Array, prob_fg: jax.Array, *,
                        eps: float) -> jax.Array:
    """Eq. (7): sum_i w_i L_i / N_bd with w_i = max(p_i, eps) / mean_j max(p_j, eps).

    Equals sum_i max(p_i, eps) L_i / sum_j max(p_j, eps) over qualifying
    candidates; p is detached here. Shapes [B, Q]; returns a scalar, 0 when no
    candidate qualifies.
    """
    weight = jnp.where(qualifies, jnp.maximum(jax.lax.stop_gradient(prob_fg), eps), 0.0)
    return (weight * loss).sum() / jnp.maximum(weight.sum(), eps)
