"""The two training-free localizers as whole-batch kernels (DESIGN section 5).

`fwhm_localize`: z-score, box smoothing, prominent peaks, FWHM windows ranked by height
(JointProj and the backbone-cosine baseline). `gmm_localize`: Gaussian smoothing, two-component
mixture per query, runs of the relevant posterior (background-contrast GMM). Both take padded
curves `[B, T]` with a prefix mask and durations `[B]`, and return `[B, K, 3]` windows
`(start_s, end_s, score)` best first with a `[B, K]` validity mask. Frame `i` covers seconds
`[i + o, i + 1 + o)` with the frame offset `o = frame_offset_s` of the split (0 for CASTELLA,
-0.5 for centre-cut Clotho-Moment; see `amr_jax.data.timing`). Every hyperparameter is
keyword-only and comes from the config.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from amr_jax import saliency
from amr_jax.localize import gmm, peaks, ranking, segments, smoothing


@flax.struct.dataclass
class Localization:
    """Predictions of one batch.

    Attributes:
      windows: `[B, K, 3]` float32 `(start_s, end_s, score)`, best first; zeros where invalid.
      valid: `[B, K]` bool.
      curve: `[B, T]` the curve the windows were read from (smoothed), for plots.
      fallback: `[B]` bool, True where no candidate qualified and the maximum was used.
    """

    windows: jax.Array
    valid: jax.Array
    curve: jax.Array
    fallback: jax.Array


@flax.struct.dataclass
class MixtureLocalization:
    """GMM predictions plus the fitted mixtures.

    Attributes:
      windows, valid, curve, fallback: as in Localization.
      posterior: `[B, T]` posterior of the relevant component.
      fit: the selected mixture of each row.
      flat: `[B]` bool, rows too short or too flat to fit.
    """

    windows: jax.Array
    valid: jax.Array
    curve: jax.Array
    fallback: jax.Array
    posterior: jax.Array
    fit: gmm.MixtureFit
    flat: jax.Array


def _fwhm_seconds(left_ips: jax.Array, right_ips: jax.Array, duration: jax.Array,
                  frame_offset_s: float | jax.Array):
    """Crossing positions (fractional frame indices) -> whole seconds, clamped.

    Frame `i`'s centre sits at `i + 0.5 + frame_offset_s` seconds. The shift is one constant so
    that offset 0 adds exactly 0.5, as before the offset existed.
    """
    shift = 0.5 + frame_offset_s
    return ranking.clamp_window(jnp.round(left_ips + shift), jnp.round(right_ips + shift),
                                duration)


def _first_argmax(x: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.argmax(jnp.where(mask, x, -jnp.inf), axis=-1).astype(jnp.int32)


def fwhm_localize(curve: jax.Array, mask: jax.Array, duration: jax.Array, *, smooth_k: int,
                  rel_height: float, min_prominence: float, num_windows: int,
                  frame_offset_s: float | jax.Array) -> Localization:
    """Prominent peaks of the standardized, box-smoothed curve with their FWHM windows.

    Per row: z-score over valid frames, `uniform_filter1d(size=smooth_k, mode="nearest")`,
    peaks as `find_peaks(prominence=min_prominence)`, windows
    `[round(left_ips + 0.5 + o), round(right_ips + 0.5 + o)]` from `peak_widths(rel_height)`
    (`o = frame_offset_s`; at least 1 s, inside the duration), ranked by smoothed height, which
    is the score. Without a
    qualifying peak the global maximum (first one) is used with its scipy prominence/width.

    Args:
      curve: `[B, T]` relevance.
      mask: `[B, T]` bool prefix mask.
      duration: `[B]` seconds.
      smooth_k: box width in frames.
      rel_height: relative height of the width measurement.
      min_prominence: minimum prominence (inclusive) in standardized units.
      num_windows: K.
      frame_offset_s: frame `i` covers `[i + o, i + 1 + o)` s (float, or a traced scalar).

    Returns:
      Localization.
    """
    y = smoothing.box_smooth(saliency.standardize(curve, mask), mask, size=smooth_k)
    found = peaks.prominent_peaks(y, mask, min_prominence=min_prominence, rel_height=rel_height,
                                  num_peaks=num_windows)
    fallback = ~found.valid[:, 0]
    top = _first_argmax(y, mask)[:, None]
    top_props = peaks.peak_properties(y, mask, top, rel_height=rel_height)
    # Rows without a prominent peak get the global maximum in slot 0 and nothing else.
    use = lambda a, b: jnp.where(fallback[:, None], a, b)
    slot0 = jnp.arange(num_windows)[None, :] == 0
    valid = use(slot0, found.valid)
    left = use(top_props.left_ips, found.left_ips)
    right = use(top_props.right_ips, found.right_ips)
    score = use(jnp.take_along_axis(y, top, axis=1), found.height)
    start, end = _fwhm_seconds(left, right, duration, frame_offset_s)
    windows = jnp.where(valid[..., None], jnp.stack([start, end, score], axis=-1), 0.0)
    return Localization(windows=windows.astype(jnp.float32), valid=valid, curve=y,
                        fallback=fallback)


def gmm_localize(trace: jax.Array, mask: jax.Array, duration: jax.Array, *, sigma: float,
                 truncate: float, n_init: int, tol: float, max_iter: int, reg_covar: float,
                 seed: int, threshold: float, peak_weight: float, fallback_rel_height: float,
                 flat_eps: float, num_windows: int,
                 frame_offset_s: float | jax.Array) -> MixtureLocalization:
    """Runs of the relevant-component posterior of a per-query two-component mixture.

    Per row: `c~ = gaussian_filter1d(trace, sigma, truncate=truncate)`; mixture by EM
    (`amr_jax.localize.gmm`); `gamma` = posterior of the higher-mean component; each run of
    `gamma >= threshold` over frames `a..b-1` gives the window `[a + o, b + o]` seconds
    (`o = frame_offset_s`, not rounded) scored
    `mean(gamma) + peak_weight * max(c~)`; ranked, top K. A row with fewer than 2 valid
    frames or `max(c~) - min(c~) <= flat_eps` is flat: no mixture is used. Flat rows and rows
    with no run get one window: the FWHM window (at `fallback_rel_height`) of the first maximum
    of `c~`, scored `gamma + peak_weight * c~` there (`gamma` = 0 on flat rows).

    Args:
      trace: `[B, T]` relevance or background-contrast trace.
      mask: `[B, T]` bool prefix mask.
      duration: `[B]` seconds.
      sigma, truncate: Gaussian smoothing.
      n_init, tol, max_iter, reg_covar, seed: mixture fitting (sklearn semantics).
      threshold: posterior threshold of a run (inclusive).
      peak_weight: weight of `max(c~)` in the score.
      fallback_rel_height: relative height of the fallback window's width.
      flat_eps: spread at or below which a row is flat.
      num_windows: K.
      frame_offset_s: frame `i` covers `[i + o, i + 1 + o)` s (float, or a traced scalar).

    Returns:
      MixtureLocalization.
    """
    c = smoothing.gaussian_smooth(trace, mask, sigma=sigma, truncate=truncate)
    n = smoothing.valid_length(mask)
    spread = (jnp.max(jnp.where(mask, c, -jnp.inf), axis=-1)
              - jnp.min(jnp.where(mask, c, jnp.inf), axis=-1))
    flat = (n < 2) | ~(spread > flat_eps)
    fit = gmm.fit_mixture(c, mask, n_init=n_init, tol=tol, max_iter=max_iter,
                          reg_covar=reg_covar, seed=seed)
    gamma = jnp.where(flat[:, None], 0.0, gmm.posterior(c, mask, fit))
    segs = segments.threshold_runs(gamma, c, mask & ~flat[:, None], threshold=threshold,
                                   peak_weight=peak_weight)
    t_len = c.shape[1]
    frames = jnp.broadcast_to(jnp.arange(t_len, dtype=c.dtype), c.shape)
    seg_start, seg_end = ranking.clamp_window(frames + frame_offset_s,
                                              segs.end.astype(c.dtype) + frame_offset_s, duration)
    fallback = ~jnp.any(segs.is_start, axis=-1)

    peak = _first_argmax(c, mask)[:, None]
    props = peaks.peak_properties(c, mask, peak, rel_height=fallback_rel_height)
    fb_start, fb_end = _fwhm_seconds(props.left_ips, props.right_ips, duration, frame_offset_s)
    fb_score = (jnp.take_along_axis(gamma, peak, axis=1)
                + peak_weight * jnp.take_along_axis(c, peak, axis=1))
    # The fallback occupies candidate slot 0; rows that have runs never use it.
    score = jnp.where(fallback[:, None], -jnp.inf, segs.score)
    score = score.at[:, 0].set(jnp.where(fallback, fb_score[:, 0], score[:, 0]))
    start = seg_start.at[:, 0].set(jnp.where(fallback, fb_start[:, 0], seg_start[:, 0]))
    end = seg_end.at[:, 0].set(jnp.where(fallback, fb_end[:, 0], seg_end[:, 0]))
    windows, valid = ranking.top_windows(score, start, end, num_windows=num_windows)
    return MixtureLocalization(windows=windows, valid=valid, curve=c, fallback=fallback,
                               posterior=gamma, fit=fit, flat=flat)
