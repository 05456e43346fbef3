"""Greedy temporal non-maximum suppression over padded candidates, batched and jittable.

Semantics (the usual greedy NMS, as lighthouse's `temporal_nms`): visit the
candidates by decreasing score, ties broken by the lower candidate index; keep a
candidate unless a kept one has IoU > `iou_threshold` with it (true-union
temporal IoU; two windows that overlap have hull = union, so this equals the
hull-based IoU of the reference); return the first K kept. Works for the
QD-DETR post-processing and for the training-free localizers alike: candidates
are `[B, C]` start / end / score with `score = -inf` marking absent ones.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from amr_jax import spans as span_ops
from amr_jax.localize.ranking import top_windows


def nms_keep(start: jax.Array, end: jax.Array, score: jax.Array, *,
             iou_threshold: float) -> jax.Array:
    """Which candidates greedy NMS keeps.

    Args:
      start, end: [B, C] candidate windows (any time unit).
      score: [B, C] scores, -inf where there is no candidate.
      iou_threshold: a candidate is suppressed by a kept one of higher rank when
        their IoU is strictly greater than this.

    Returns:
      [B, C] bool, True on kept candidates (never on absent ones).
    """
    num = score.shape[1]
    order = jnp.argsort(-score, axis=1, stable=True)
    rank = jnp.argsort(order, axis=1)                      # position of each candidate
    xx = jnp.stack([start, end], axis=-1)
    xx = jnp.take_along_axis(xx, order[..., None], axis=1)
    present = jnp.take_along_axis(score, order, axis=1) > -jnp.inf
    overlaps = span_ops.pairwise_iou(xx, xx) > iou_threshold  # [B, C, C] in visiting order

    def visit(i, carry):
        keep, suppressed = carry
        keep_i = present[:, i] & ~suppressed[:, i]
        keep = keep.at[:, i].set(keep_i)
        suppressed = suppressed | (keep_i[:, None] & overlaps[:, i, :])
        return keep, suppressed

    init = (jnp.zeros_like(present), jnp.zeros_like(present))
    keep_sorted, _ = jax.lax.fori_loop(0, num, visit, init)
    return jnp.take_along_axis(keep_sorted, rank, axis=1)


def nms_top_windows(start: jax.Array, end: jax.Array, score: jax.Array, *,
                    iou_threshold: float, num_windows: int) -> tuple[jax.Array, jax.Array]:
    """Greedy NMS, then the `num_windows` best kept candidates of each row.

    Args:
      start, end, score: [B, C] as in `nms_keep`.
      iou_threshold: see `nms_keep`.
      num_windows: K.

    Returns:
      windows [B, K, 3] (start, end, score) best first and valid [B, K] bool,
      the layout of `amr_jax.localize.ranking.top_windows` (invalid rows zero).
    """
    keep = nms_keep(start, end, score, iou_threshold=iou_threshold)
    return top_windows(jnp.where(keep, score, -jnp.inf), start, end, num_windows=num_windows)
