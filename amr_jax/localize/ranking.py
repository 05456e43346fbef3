"""From scored candidates to the fixed `[B, K, 3]` prediction layout.

Predictions are `[B, K, 3]` rows `(start_s, end_s, score)`, best first, plus a `[B, K]`
validity mask; invalid rows are zeros.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def clamp_window(start: jax.Array, end: jax.Array, duration: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Makes windows at least 1 s long and keeps them inside `[0, duration]`.

    The end is first pushed to `start + 1` if shorter, then clipped to the duration; the start
    is then pulled back to `end - 1` if needed and clipped at 0. For `duration >= 1` the result
    is a window of at least 1 s inside the recording.

    Args:
      start, end: `[B, ...]` seconds.
      duration: `[B]` seconds.

    Returns:
      `(start, end)`, same shapes.
    """
    dur = duration.reshape((-1,) + (1,) * (start.ndim - 1))
    end = jnp.minimum(jnp.maximum(end, start + 1.0), dur)
    start = jnp.maximum(jnp.minimum(start, end - 1.0), 0.0)
    return start, end


def top_windows(score: jax.Array, start: jax.Array, end: jax.Array, *,
                num_windows: int) -> tuple[jax.Array, jax.Array]:
    """Keeps the `num_windows` best candidates of each row.

    Candidates with `score = -inf` are absent. Ties go to the lower candidate index (earlier
    frame), as a stable sort would.

    Args:
      score: `[B, C]` candidate scores, `-inf` where there is no candidate.
      start, end: `[B, C]` candidate windows in seconds.
      num_windows: K.

    Returns:
      windows `[B, K, 3]` float32 and valid `[B, K]` bool.
    """
    b_size, c = score.shape
    k = min(num_windows, c)
    top, idx = jax.lax.top_k(score, k)
    valid = top > -jnp.inf
    st = jnp.take_along_axis(start, idx, axis=1)
    en = jnp.take_along_axis(end, idx, axis=1)
    windows = jnp.where(valid[..., None], jnp.stack([st, en, top], axis=-1), 0.0)
    if k < num_windows:
        windows = jnp.concatenate([windows, jnp.zeros((b_size, num_windows - k, 3), windows.dtype)], 1)
        valid = jnp.concatenate([valid, jnp.zeros((b_size, num_windows - k), bool)], 1)
    return windows.astype(jnp.float32), valid
