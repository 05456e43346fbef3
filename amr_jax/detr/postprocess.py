"""QD-DETR outputs -> ranked windows in seconds (reference `PostProcessorDETR`).

Spans are de-normalized with the annotation duration, scored by the softmax
foreground probability (class 0), sorted by score (descending), rounded to 4
decimals, clamped to `[0, max_ts_val]` (a constant, not the duration) and
rounded to multiples of `clip_length`. No NMS.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from amr_jax import spans as span_ops


def postprocess(pred_logits: jax.Array, pred_spans: jax.Array, duration: jax.Array, *,
                max_ts_val: float, clip_length: float, top_k: int
                ) -> tuple[jax.Array, jax.Array]:
    """Ranked windows of every query.

    Args:
      pred_logits: [B, Q, 2] logits, class 0 = foreground.
      pred_spans: [B, Q, 2] normalized (center, width).
      duration: [B] seconds.
      max_ts_val: upper clamp in seconds.
      clip_length: rounding grid in seconds.
      top_k: number of windows to return (K).

    Returns:
      windows [B, K, 3] (start_s, end_s, score) best first, and valid [B, K]
      bool (False only where Q < K).
    """
    num_queries = pred_logits.shape[1]
    score = jax.nn.softmax(pred_logits.astype(jnp.float32), axis=-1)[..., 0]
    xx = span_ops.cxw_to_xx(pred_spans.astype(jnp.float32)) * duration[:, None, None]
    order = jnp.argsort(-score, axis=1, stable=True)
    score = jnp.take_along_axis(score, order, axis=1)
    xx = jnp.take_along_axis(xx, order[..., None], axis=1)
    xx = jnp.round(xx, 4)
    xx = jnp.clip(xx, 0.0, max_ts_val)
    xx = jnp.round(xx / clip_length) * clip_length
    windows = jnp.concatenate([xx, jnp.round(score, 4)[..., None]], axis=-1)
    k = min(top_k, num_queries)
    windows = windows[:, :k]
    valid = jnp.ones(windows.shape[:2], bool)
    if k < top_k:
        pad = top_k - k
        windows = jnp.pad(windows, ((0, 0), (0, pad), (0, 0)))
        valid = jnp.pad(valid, ((0, 0), (0, pad)))
    return windows, valid
