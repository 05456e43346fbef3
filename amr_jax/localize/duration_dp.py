"""Duration-prior window search (DESIGN 9.9, seed 000's negative result), batched and exact.

On the standardized joint-space curve `z` (`saliency.standardize`), the window of frames
`[a, a + l)` scores

    J(a, l) = sum_{t in [a, a+l)} (z_t - tau) + lam * log p(l),

with `p` a log-normal density of the window length in seconds (frames are 1 s), fitted on the
training split's windows (`fit_lognormal`; the parameters live in the config). Every
`(a, l)` with `1 <= l <= max_len` and `a + l <= n` (n = valid frames) is scored at once from
one cumulative sum: a `[B, T, max_len]` table, no recursion needed, so the "dynamic
programme" is an exhaustive search that is exact by construction. The chosen windows are the
best one, then repeatedly the best one whose IoU with every chosen window is at most
`iou_threshold` (greedy suppression; IoU measured on frame intervals), up to K. Ties go to
the lower start, then the shorter length. Frame `i` covers `[i + o, i + 1 + o)` s, so a
window of frames `[a, a + l)` is `[a + o, a + l + o]` seconds, clamped to the duration
(`ranking.clamp_window`); its score is the objective `J`.

Padding never enters: candidates that reach past the valid frames are absent, so a padded
row gives the unpadded result.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from amr_jax import saliency
from amr_jax.localize import ranking

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@flax.struct.dataclass
class DPLocalization:
    """Predictions of one batch (the fields of `systems.Localization`).

    Attributes:
      windows: `[B, K, 3]` float32 `(start_s, end_s, score)`, best first; zeros where invalid.
      valid: `[B, K]` bool.
      curve: `[B, T]` the standardized curve the windows were read from.
      fallback: `[B]` bool, always False (every row with a valid frame has a window).
    """

    windows: jax.Array
    valid: jax.Array
    curve: jax.Array
    fallback: jax.Array


def lognormal_logpdf(length: jax.Array, *, log_mu: float, log_sigma: float) -> jax.Array:
    """`log p(length)` of a log-normal with parameters of `log(length)` (mean, std)."""
    log_len = jnp.log(length)
    return (-log_len - math.log(log_sigma) - _LOG_SQRT_2PI
            - 0.5 * jnp.square((log_len - log_mu) / log_sigma))


def fit_lognormal(lengths: Iterable[float]) -> tuple[float, float]:
    """Maximum-likelihood log-normal of positive window lengths: `(mean, std)` of `log`.

    Raises:
      ValueError: fewer than two positive lengths, or all lengths equal.
    """
    x = np.asarray([v for v in lengths if v > 0], np.float64)
    if len(x) < 2:
        raise ValueError(f"a log-normal needs at least 2 positive window lengths, got {len(x)}")
    logs = np.log(x)
    sigma = float(logs.std())
    if not sigma > 0:
        raise ValueError("all window lengths are equal: a log-normal cannot be fitted")
    return float(logs.mean()), sigma


def window_table(z: jax.Array, mask: jax.Array, *, tau: float, lam: float, log_mu: float,
                 log_sigma: float, max_len: int) -> jax.Array:
    """The objective of every window: `[B, T, L]`, `-inf` where absent.

    Entry `[b, a, l - 1]` is `J(a, l)` of row b; `L = min(max_len, T)`.

    Args:
      z: `[B, T]` standardized curve (0 on padding).
      mask: `[B, T]` bool prefix mask.
      tau, lam, log_mu, log_sigma, max_len: see the module docstring.
    """
    b_size, t_len = z.shape
    # Lengths beyond the padded length never fit: the table stops there (static shapes).
    max_len = min(max_len, t_len)
    n = jnp.sum(mask, axis=-1).astype(jnp.int32)
    excess = jnp.where(mask, z - tau, 0.0)
    cum = jnp.concatenate([jnp.zeros((b_size, 1), z.dtype), jnp.cumsum(excess, axis=1)], axis=1)
    lengths = jnp.arange(1, max_len + 1, dtype=jnp.int32)
    starts = jnp.arange(t_len, dtype=jnp.int32)
    ends = starts[:, None] + lengths[None, :]                          # [T, L]
    present = ends[None] <= n[:, None, None]                           # [B, T, L]
    total = jnp.take(cum, jnp.minimum(ends, t_len).reshape(-1), axis=1).reshape(
        b_size, t_len, max_len) - cum[:, :t_len, None]
    prior = lognormal_logpdf(lengths.astype(z.dtype), log_mu=log_mu, log_sigma=log_sigma)
    return jnp.where(present, total + lam * prior[None, None, :], -jnp.inf)


def greedy_windows(table: jax.Array, *, iou_threshold: float, num_windows: int
                   ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Best window, then the best not overlapping a chosen one by IoU > threshold, K times.

    Args:
      table: `[B, T, L]` objective, `-inf` where absent.

    Returns:
      start `[B, K]` int32 frame, length `[B, K]` int32, score `[B, K]`, valid `[B, K]` bool.
    """
    b_size, t_len, max_len = table.shape
    flat = table.reshape(b_size, -1)
    cand_start = jnp.repeat(jnp.arange(t_len, dtype=jnp.int32), max_len)[None, :]
    cand_len = jnp.tile(jnp.arange(1, max_len + 1, dtype=jnp.int32), t_len)[None, :]
    cand_end = cand_start + cand_len

    def pick(alive, _):
        # argmax takes the first maximum: lower start, then shorter length.
        idx = jnp.argmax(alive, axis=1)
        score = jnp.take_along_axis(alive, idx[:, None], axis=1)[:, 0]
        ok = score > -jnp.inf
        a = idx // max_len
        ln = idx % max_len + 1
        inter = jnp.maximum(0, jnp.minimum(cand_end, (a + ln)[:, None])
                            - jnp.maximum(cand_start, a[:, None]))
        union = cand_len + ln[:, None] - inter
        overlap = inter.astype(table.dtype) / union.astype(table.dtype) > iou_threshold
        alive = jnp.where(ok[:, None] & overlap, -jnp.inf, alive)
        return alive, (a.astype(jnp.int32), ln.astype(jnp.int32), score, ok)

    _, (start, length, score, valid) = jax.lax.scan(pick, flat, None, length=num_windows)
    return start.T, length.T, score.T, valid.T


def dp_localize(curve: jax.Array, mask: jax.Array, duration: jax.Array, *, tau: float,
                lam: float, log_mu: float, log_sigma: float, max_len: int, iou_threshold: float,
                num_windows: int, frame_offset_s: float | jax.Array) -> DPLocalization:
    """Duration-prior windows of every row (module docstring).

    Args:
      curve: `[B, T]` relevance (standardized here).
      mask: `[B, T]` bool prefix mask.
      duration: `[B]` seconds.
      tau: excess threshold subtracted from every frame (standardized units).
      lam: weight of the log prior.
      log_mu, log_sigma: the log-normal of the window length in seconds.
      max_len: longest window in frames.
      iou_threshold: suppression threshold of the later windows.
      num_windows: K.
      frame_offset_s: frame `i` covers `[i + o, i + 1 + o)` s.

    Returns:
      DPLocalization.
    """
    z = saliency.standardize(curve, mask)
    table = window_table(z, mask, tau=tau, lam=lam, log_mu=log_mu, log_sigma=log_sigma,
                         max_len=max_len)
    start, length, score, valid = greedy_windows(table, iou_threshold=iou_threshold,
                                                 num_windows=num_windows)
    st = start.astype(z.dtype) + frame_offset_s
    st, en = ranking.clamp_window(st, st + length.astype(z.dtype), duration)
    windows = jnp.where(valid[..., None], jnp.stack([st, en, score], axis=-1), 0.0)
    return DPLocalization(windows=windows.astype(jnp.float32), valid=valid, curve=z,
                          fallback=jnp.zeros(z.shape[:1], bool))
