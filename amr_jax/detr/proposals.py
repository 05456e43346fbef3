"""Short-window proposals around saliency peaks (seed 003, DESIGN 9.5), batched.

From the positive-pair saliency curve s [B, T] of a query:

  * ŝ = min-max normalization of s over the valid frames (0 everywhere when
    the curve is flat);
  * peaks: valid frames with ŝ_t > ŝ_{t-1} and ŝ_t >= ŝ_{t+1}, a missing
    neighbour (before frame 0, after the last valid frame) counting as -inf,
    so the edges compare to one side only; the `num_peaks` highest (ties to
    the earlier frame);
  * for each peak p, three windows in frames: [p, p+1]; [p, p+2] when
    ŝ_{p+1} >= ŝ_{p-1}, else [p-1, p+1]; [p-1, p+2] (1, 2 and 3 clips),
    converted to seconds with `clip_length`, each scored `coefficient * ŝ_p`
    (0.25: short proposals rank below confident decoder windows).
Windows are not clipped here (the post-processing clips to the duration).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

WINDOWS_PER_PEAK = 3


def normalized_curve(saliency: jax.Array, mask: jax.Array) -> jax.Array:
    """ŝ [B, T]: min-max over valid frames, 0 when flat; -inf on padded frames."""
    lo = jnp.min(jnp.where(mask, saliency, jnp.inf), axis=1, keepdims=True)
    hi = jnp.max(jnp.where(mask, saliency, -jnp.inf), axis=1, keepdims=True)
    span = hi - lo
    safe = jnp.where(span > 0, span, 1.0)
    s_hat = jnp.where(span > 0, (saliency - lo) / safe, 0.0)
    return jnp.where(mask, s_hat, -jnp.inf)


def saliency_peak_proposals(saliency: jax.Array, mask: jax.Array, *, num_peaks: int,
                            coefficient: float, clip_length: float
                            ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Short proposals of every query.

    Args:
      saliency: [B, T] positive-pair saliency scores (padded frames arbitrary).
      mask: [B, T] bool valid frames (a prefix, at least one frame).
      num_peaks: peaks kept per query (3).
      coefficient: score multiplier of ŝ_p (0.25).
      clip_length: seconds per frame.

    Returns:
      start, end [B, 3 * num_peaks] seconds and score [B, 3 * num_peaks]
      (-inf where a query has fewer peaks); the three windows of peak k are
      columns 3k .. 3k + 2.
    """
    mask = mask.astype(bool)
    s_hat = normalized_curve(saliency.astype(jnp.float32), mask)
    neg_inf = jnp.full_like(s_hat[:, :1], -jnp.inf)
    prev = jnp.concatenate([neg_inf, s_hat[:, :-1]], axis=1)
    nxt = jnp.concatenate([s_hat[:, 1:], neg_inf], axis=1)
    is_peak = mask & (s_hat > prev) & (s_hat >= nxt)
    k = min(num_peaks, s_hat.shape[1])
    top, peak = jax.lax.top_k(jnp.where(is_peak, s_hat, -jnp.inf), k)        # [B, k]
    present = top > -jnp.inf
    prev_p = jnp.take_along_axis(prev, peak, axis=1)
    next_p = jnp.take_along_axis(nxt, peak, axis=1)
    p = peak.astype(jnp.float32)
    two_start = jnp.where(next_p >= prev_p, p, p - 1.0)
    start = jnp.stack([p, two_start, p - 1.0], axis=-1).reshape(p.shape[0], -1)
    end = jnp.stack([p + 1.0, two_start + 2.0, p + 2.0], axis=-1).reshape(p.shape[0], -1)
    score = jnp.where(present, coefficient * top, -jnp.inf)
    score = jnp.repeat(score, WINDOWS_PER_PEAK, axis=1)
    if k < num_peaks:
        pad = ((0, 0), (0, WINDOWS_PER_PEAK * (num_peaks - k)))
        start, end = jnp.pad(start, pad), jnp.pad(end, pad)
        score = jnp.pad(score, pad, constant_values=-jnp.inf)
    return start * clip_length, end * clip_length, score
