"""Local maxima, prominences and widths, batched, with scipy.signal's exact semantics.

`local_maxima` marks what `scipy.signal.find_peaks` returns before any filtering (a flat peak
is reported at the middle of its plateau, rounded down; the first and last valid frames are
never peaks). `peak_properties` gives, for any frame indices, what
`scipy.signal.peak_prominences` (no window) and `scipy.signal.peak_widths` give: the bases,
the prominence and the interpolated crossing points at `rel_height`.

scipy walks outwards from each peak one sample at a time. Here every walk is a masked
reduction over the row (`[B, P, T]` for `P` queried positions), so all peaks of all rows are
processed at once with no data-dependent loop and no per-step gathers. `prominent_peaks`
queries the local maxima in blocks of `P`, highest first, and stops as soon as every row has
its `K` best prominent peaks, which is exact and usually needs one block. Rows are `[B, T]`
with a prefix mask (valid frames first); padding is never looked at, so a padded row gives the
unpadded result.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from amr_jax.localize.smoothing import valid_length

# Local maxima examined per block in `prominent_peaks`; a speed knob only (results do not
# depend on it): one or two blocks usually hold the K best prominent peaks.
_BLOCK = 12


@flax.struct.dataclass
class PeakProperties:
    """Per-position peak properties, all `[B, P]` for queried positions `[B, P]`.

    Attributes:
      prominence: height above the higher of the two bases.
      left_base, right_base: int32 frame indices of the bases (scipy's tie rule: the base
        closest to the peak among equal minima).
      width_height: the height at which the width is measured.
      left_ips, right_ips: interpolated crossing positions in frames.
    """

    prominence: jax.Array
    left_base: jax.Array
    right_base: jax.Array
    width_height: jax.Array
    left_ips: jax.Array
    right_ips: jax.Array


def _take(a: jax.Array, idx: jax.Array) -> jax.Array:
    """`a [B, T]`, `idx [B, P]` (clipped into range) -> `[B, P]`."""
    return jnp.take_along_axis(a, jnp.clip(idx, 0, a.shape[1] - 1), axis=1)


def local_maxima(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Frames that `scipy.signal.find_peaks(x[:n])` reports (no conditions).

    Args:
      x: `[B, T]` float.
      mask: `[B, T]` bool prefix mask.

    Returns:
      `[B, T]` bool.
    """
    t_len = x.shape[1]
    t = jnp.arange(t_len, dtype=jnp.int32)[None, :]
    n = valid_length(mask)[:, None]
    x_prev = jnp.concatenate([x[:, :1], x[:, :-1]], axis=1)
    x_next = jnp.concatenate([x[:, 1:], x[:, -1:]], axis=1)
    same_prev = (x == x_prev) & (t >= 1)
    same_next = (x == x_next) & (t < n - 1)
    run_start = jax.lax.cummax(jnp.where(same_prev, 0, t), axis=1)
    run_end = jax.lax.cummin(jnp.where(same_next, t_len, t), axis=1, reverse=True)
    before = _take(x, run_start - 1)
    after = _take(x, run_end + 1)
    return (mask & (run_start >= 1) & (run_end <= n - 2) & (before < x) & (after < x)
            & (t == (run_start + run_end) // 2))


def peak_properties(x: jax.Array, mask: jax.Array, positions: jax.Array, *,
                    rel_height: float) -> PeakProperties:
    """Prominences and widths at `positions`, as `peak_prominences` + `peak_widths` compute.

    Any valid frame may be queried (not only local maxima); e.g. the global maximum at the
    first frame has prominence 0 and zero width there, as in scipy.

    Args:
      x: `[B, T]` float.
      mask: `[B, T]` bool prefix mask.
      positions: `[B, P]` int frame indices, each `< n` of its row.
      rel_height: relative height of the width measurement (0.5 = full width at half maximum).

    Returns:
      PeakProperties of `[B, P]` arrays.
    """
    t_len = x.shape[1]
    n = valid_length(mask)[:, None, None]
    t = jnp.arange(t_len, dtype=jnp.int32)[None, None, :]
    p = positions.astype(jnp.int32)[..., None]  # [B, P, 1]
    xt = x[:, None, :]  # [B, 1, T]
    xp = _take(x, positions)[..., None]
    inside = t < n
    big = jnp.int32(t_len)

    # The walk from the peak stops at the first strictly higher sample or the row end.
    higher = inside & (xt > xp)
    lo = jnp.max(jnp.where(higher & (t < p), t, -1), axis=-1, keepdims=True) + 1
    hi = jnp.min(jnp.where(higher & (t > p), t, n), axis=-1, keepdims=True) - 1
    in_left = (t >= lo) & (t <= p)
    in_right = (t >= p) & (t <= hi)
    left_min = jnp.min(jnp.where(in_left, xt, jnp.inf), axis=-1, keepdims=True)
    right_min = jnp.min(jnp.where(in_right, xt, jnp.inf), axis=-1, keepdims=True)
    # scipy moves a base only on a strictly lower sample: the minimum nearest the peak.
    left_base = jnp.max(jnp.where(in_left & (xt <= left_min), t, -1), axis=-1, keepdims=True)
    right_base = jnp.min(jnp.where(in_right & (xt <= right_min), t, big), axis=-1, keepdims=True)
    prominence = xp - jnp.maximum(left_min, right_min)

    height = xp - prominence * rel_height
    below = xt <= height
    li = jnp.max(jnp.where((t >= left_base) & (t <= p) & below, t, -1), axis=-1, keepdims=True)
    ri = jnp.min(jnp.where((t >= p) & (t <= right_base) & below, t, big), axis=-1, keepdims=True)
    li = jnp.maximum(li, left_base)[..., 0]
    ri = jnp.minimum(ri, right_base)[..., 0]
    height = height[..., 0]
    xl, xl_next = _take(x, li), _take(x, li + 1)
    xr, xr_prev = _take(x, ri), _take(x, ri - 1)
    interp_l = xl < height
    interp_r = xr < height
    left_ips = li + jnp.where(interp_l, (height - xl) / jnp.where(interp_l, xl_next - xl, 1.0), 0.0)
    right_ips = ri - jnp.where(interp_r, (height - xr) / jnp.where(interp_r, xr_prev - xr, 1.0), 0.0)
    return PeakProperties(prominence=prominence[..., 0], left_base=left_base[..., 0],
                          right_base=right_base[..., 0], width_height=height,
                          left_ips=left_ips, right_ips=right_ips)


@flax.struct.dataclass
class RankedPeaks:
    """The K highest prominent peaks of each row, highest first; all `[B, K]`.

    Attributes:
      position: int32 frame index (0 where invalid).
      height: `x` at the peak.
      left_ips, right_ips: interpolated width crossings in frames.
      valid: bool.
    """

    position: jax.Array
    height: jax.Array
    left_ips: jax.Array
    right_ips: jax.Array
    valid: jax.Array


def prominent_peaks(x: jax.Array, mask: jax.Array, *, min_prominence: float, rel_height: float,
                    num_peaks: int) -> RankedPeaks:
    """`find_peaks(x, prominence=min_prominence)` + `peak_widths`, the `num_peaks` highest.

    Ties in height go to the earlier peak (a stable sort by descending height).

    Args:
      x: `[B, T]` float.
      mask: `[B, T]` bool prefix mask.
      min_prominence: minimum prominence, inclusive.
      rel_height: relative height of the widths.
      num_peaks: K.

    Returns:
      RankedPeaks.
    """
    b_size, t_len = x.shape
    block = min(_BLOCK, t_len)
    t = jnp.arange(t_len, dtype=jnp.int32)[None, None, :]
    slots = jnp.arange(num_peaks, dtype=jnp.int32)

    def body(state):
        remaining, count, pos, left, right = state
        # The next local maxima by descending height; top_k breaks ties by lower index.
        top, cand = jax.lax.top_k(remaining, block)
        cand = cand.astype(jnp.int32)
        props = peak_properties(x, mask, cand, rel_height=rel_height)
        is_cand = top > -jnp.inf
        keep = is_cand & (props.prominence >= min_prominence)
        # Candidates arrive in rank order: the j-th kept one goes to slot count + j.
        dest = count[:, None] + jnp.cumsum(keep, axis=-1) - 1
        hit = keep[:, :, None] & (dest[:, :, None] == slots[None, None, :])  # [B, block, K]
        found = jnp.any(hit, axis=1)

        def place(old, new):
            return jnp.where(found, jnp.sum(jnp.where(hit, new[:, :, None], 0), axis=1), old)

        taken = jnp.any(is_cand[:, :, None] & (cand[:, :, None] == t), axis=1)
        return (jnp.where(taken, -jnp.inf, remaining), count + jnp.sum(keep, axis=-1),
                place(pos, cand), place(left, props.left_ips), place(right, props.right_ips))

    def cond(state):
        remaining, count = state[0], state[1]
        return jnp.any((count < num_peaks) & jnp.any(remaining > -jnp.inf, axis=-1))

    zeros_f = jnp.zeros((b_size, num_peaks), x.dtype)
    init = (jnp.where(local_maxima(x, mask), x, -jnp.inf), jnp.zeros((b_size,), jnp.int32),
            jnp.zeros((b_size, num_peaks), jnp.int32), zeros_f, zeros_f)
    _, count, pos, left, right = jax.lax.while_loop(cond, body, init)
    valid = slots[None, :] < count[:, None]
    height = jnp.where(valid, _take(x, pos), 0.0)
    return RankedPeaks(position=pos, height=height, left_ips=left, right_ips=right, valid=valid)
