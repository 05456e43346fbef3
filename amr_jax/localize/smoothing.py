"""Masked 1-D smoothing filters equal to their scipy.ndimage counterparts on the valid frames.

Rows are `[B, T]` with a prefix mask (valid frames first). Each row is filtered as if it were
the unpadded sequence of its valid length `n`: the boundary extension starts at frame `n - 1`,
never at the padding. Padded frames of the output are 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def valid_length(mask: jax.Array) -> jax.Array:
    """`[B, T]` bool prefix mask -> `[B]` int32 number of valid frames."""
    return jnp.sum(mask, axis=-1).astype(jnp.int32)


def _weighted_taps(x: jax.Array, mask: jax.Array, offsets: np.ndarray, weights: np.ndarray,
                   extend) -> jax.Array:
    """`y[t] = sum_j w_j x[extend(t + o_j, n)]` for every row; `extend` maps to `[0, n)`.

    The extended row is gathered once (`T + taps - 1` values per row); the taps are then
    static slices of it.
    """
    _, t_len = x.shape
    lo, taps = int(offsets[0]), len(offsets)
    if not np.array_equal(offsets, np.arange(lo, lo + taps)):
        raise ValueError("offsets must be consecutive")
    n = jnp.maximum(valid_length(mask), 1)[:, None]
    idx = extend(jnp.arange(t_len + taps - 1, dtype=jnp.int32)[None, :] + lo, n)
    ext = jnp.take_along_axis(x, idx, axis=1)
    y = sum(float(w) * ext[:, j:j + t_len] for j, w in enumerate(weights))
    return jnp.where(mask, y, 0.0)


def _nearest(idx: jax.Array, n: jax.Array) -> jax.Array:
    return jnp.clip(idx, 0, n - 1)


def _reflect(idx: jax.Array, n: jax.Array) -> jax.Array:
    # Half-sample symmetric extension (d c b a | a b c d | d c b a), repeated with period 2n
    # when the kernel is longer than the row, as scipy.ndimage does for mode="reflect".
    m = jnp.mod(idx, 2 * n)
    return jnp.where(m >= n, 2 * n - 1 - m, m)


def box_smooth(x: jax.Array, mask: jax.Array, *, size: int) -> jax.Array:
    """Moving average of width `size`, edge values repeated.

    Equals `scipy.ndimage.uniform_filter1d(x[:n], size, mode="nearest")` per row (for even
    sizes the window is `[t - size // 2, t + size - 1 - size // 2]`, as in scipy).

    Args:
      x: `[B, T]` float.
      mask: `[B, T]` bool prefix mask.
      size: window width in frames, >= 1.

    Returns:
      `[B, T]`, 0 on padded frames.
    """
    if size < 1:
        raise ValueError(f"box_smooth: size must be >= 1, got {size}")
    offsets = np.arange(size) - size // 2
    weights = np.full(size, 1.0 / size)
    return _weighted_taps(x, mask, offsets, weights, _nearest)


def gaussian_kernel(sigma: float, truncate: float) -> np.ndarray:
    """Normalized Gaussian taps of radius `int(truncate * sigma + 0.5)`, as scipy builds them."""
    if sigma <= 0:
        raise ValueError(f"gaussian_kernel: sigma must be > 0, got {sigma}")
    radius = int(truncate * float(sigma) + 0.5)
    r = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 / (sigma * sigma) * r * r)
    return w / w.sum()


def gaussian_smooth(x: jax.Array, mask: jax.Array, *, sigma: float, truncate: float) -> jax.Array:
    """Gaussian smoothing with half-sample reflection at the row ends.

    Equals `scipy.ndimage.gaussian_filter1d(x[:n], sigma, mode="reflect", truncate=truncate)`
    per row.

    Args:
      x: `[B, T]` float.
      mask: `[B, T]` bool prefix mask.
      sigma: standard deviation in frames.
      truncate: kernel radius in standard deviations.

    Returns:
      `[B, T]`, 0 on padded frames.
    """
    weights = gaussian_kernel(sigma, truncate)
    radius = len(weights) // 2
    offsets = np.arange(-radius, radius + 1)
    return _weighted_taps(x, mask, offsets, weights, _reflect)

