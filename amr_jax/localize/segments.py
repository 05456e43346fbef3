"""Runs of a thresholded posterior as candidate segments, batched.

Rows are `[B, T]` with a prefix mask. A segment is a maximal run of valid frames with
`gamma >= threshold`; it is reported at its first frame `a` with its exclusive end `b`
(frames `a .. b-1`, seconds `[a, b]`) and the score `mean(gamma[a:b]) + w * max(c[a:b])`.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class Segments:
    """Candidate segments indexed by their first frame; all `[B, T]`.

    Attributes:
      is_start: True at the first frame of a run; the other fields are defined there only.
      end: int32 exclusive end frame of the run.
      score: `mean(gamma) + w * max(c)` over the run.
    """

    is_start: jax.Array
    end: jax.Array
    score: jax.Array


def _segmented_max(flags: jax.Array, values: jax.Array) -> jax.Array:
    """Running maximum along axis 1 that restarts wherever `flags` is True."""

    def combine(a, b):
        fa, va = a
        fb, vb = b
        return fa | fb, jnp.where(fb, vb, jnp.maximum(va, vb))

    return jax.lax.associative_scan(combine, (flags, values), axis=1)[1]


def threshold_runs(gamma: jax.Array, c: jax.Array, mask: jax.Array, *, threshold: float,
                   peak_weight: float) -> Segments:
    """Finds the runs of `gamma >= threshold` and scores them.

    Args:
      gamma: `[B, T]` posterior of the relevant component.
      c: `[B, T]` smoothed trace (the `max` term of the score).
      mask: `[B, T]` bool prefix mask.
      threshold: posterior threshold (inclusive).
      peak_weight: weight `w` of `max(c)` in the score.

    Returns:
      Segments.
    """
    b_size, t_len = gamma.shape
    t = jnp.arange(t_len, dtype=jnp.int32)[None, :]
    active = mask & (gamma >= threshold)
    prev_active = jnp.concatenate([jnp.zeros((b_size, 1), bool), active[:, :-1]], axis=1)
    is_start = active & ~prev_active
    # A run starting at `a` ends at the first inactive frame after it (padding is inactive).
    end = jax.lax.cummin(jnp.where(active, t_len, t), axis=1, reverse=True)
    end = jnp.where(is_start, end, t)
    cum = jnp.concatenate([jnp.zeros((b_size, 1), gamma.dtype),
                           jnp.cumsum(jnp.where(active, gamma, 0.0), axis=1)], axis=1)
    total = jnp.take_along_axis(cum, end, axis=1) - cum[:, :t_len]
    length = jnp.maximum(end - t, 1).astype(gamma.dtype)
    run_max = _segmented_max(is_start, jnp.where(active, c, -jnp.inf))
    peak = jnp.take_along_axis(run_max, jnp.clip(end - 1, 0, t_len - 1), axis=1)
    score = total / length + peak_weight * peak
    return Segments(is_start=is_start, end=end.astype(jnp.int32),
                    score=jnp.where(is_start, score, -jnp.inf))
